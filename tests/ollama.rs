//! The Ollama backend over real HTTP: reqwest against a local test double (tiny_http on 127.0.0.1:0)
//! that serves Ollama's documented reply bodies (tests/data/ollama/), then a live run against a real
//! server when one answers at OLLAMA_HOST. No Ollama binary exists on this project's machines, so the
//! double stands in for the server; the client, the request it sends, the timeouts and the error
//! mapping are the real code.

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use infergate::backend::ollama::{self, OllamaBackend, OllamaConfig};
use infergate::backend::Availability;
use infergate::backend::{Backend, Recompute};
use infergate::error::BackendError;
use infergate::measure::{measured_ok, run_series, RunOutcome, SeriesPlan};
use infergate::model::tokenizer::Tokenizer;
use infergate::model::GgufFile;
use infergate::workload;

const NORMAL: &str = include_str!("data/ollama/generate_normal.json");
const CACHE_HIT: &str = include_str!("data/ollama/generate_cache_hit.json");
const EARLY_STOP: &str = include_str!("data/ollama/generate_early_stop.json");
const NOT_FOUND: &str = include_str!("data/ollama/error_model_not_found.json");
const RUNNER_FAILED: &str = include_str!("data/ollama/error_runner_failed.json");
const VERSION: &str = include_str!("data/ollama/version.json");
const TAGS: &str = include_str!("data/ollama/tags.json");

/// What the double answers to `POST /api/generate`.
#[derive(Clone, Copy)]
enum GenerateReply {
    Body(u16, &'static str),
    /// Read the request and never answer (the client must time out).
    Hang,
}

/// A local HTTP server answering like Ollama; records every `/api/generate` body it receives.
struct FakeOllama {
    server: Arc<tiny_http::Server>,
    port: u16,
    generate_bodies: Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

impl FakeOllama {
    /// `version_status` 404 makes it answer like a server that is not Ollama (llama-server).
    fn start(generate: GenerateReply, version_status: u16) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let (tx, generate_bodies) = channel();
        let s = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut request in s.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let (status, reply) = match (request.method(), request.url()) {
                    (tiny_http::Method::Get, "/api/version") if version_status == 200 => {
                        (200, VERSION)
                    }
                    (tiny_http::Method::Get, "/api/tags") => (200, TAGS),
                    (tiny_http::Method::Post, "/api/generate") => {
                        let _ = tx.send(body);
                        match generate {
                            GenerateReply::Body(status, reply) => (status, reply),
                            GenerateReply::Hang => {
                                held.push(request);
                                continue;
                            }
                        }
                    }
                    _ => (404, "404 page not found"),
                };
                let header =
                    tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                        .expect("valid header");
                let _ = request.respond(
                    tiny_http::Response::from_string(reply)
                        .with_status_code(status)
                        .with_header(header),
                );
            }
        });
        FakeOllama {
            server,
            port,
            generate_bodies,
            thread: Some(thread),
        }
    }

    fn config(&self) -> OllamaConfig {
        let mut c = OllamaConfig::new(
            ollama::parse_host(&format!("127.0.0.1:{}", self.port)).expect("host"),
            ollama::DEFAULT_MODEL,
        );
        c.request_timeout = Duration::from_secs(20);
        c
    }

    fn last_generate_body(&self) -> serde_json::Value {
        let body = self
            .generate_bodies
            .recv_timeout(Duration::from_secs(5))
            .expect("the client sent /api/generate");
        serde_json::from_str(&body).expect("the request body is JSON")
    }
}

impl Drop for FakeOllama {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tokenizer() -> Tokenizer {
    let path = infergate::model::catalog::default_model()
        .and_then(|m| m.gguf_path())
        .expect("SmolLM2 GGUF");
    Tokenizer::from_gguf(&GgufFile::open(&path).expect("GGUF")).expect("tokenizer")
}

/// The `micro` scenario's prompt ids (8 tokens, as the fixtures' `prompt_eval_count`).
fn micro_prompt() -> &'static [u32] {
    static IDS: OnceLock<Vec<u32>> = OnceLock::new();
    IDS.get_or_init(|| {
        let t = tokenizer();
        workload::prompt_ids(&workload::scenario("micro").expect("micro"), |s| {
            t.encode(s)
        })
        .expect("prompt ids")
    })
}

fn open(fake: &FakeOllama) -> OllamaBackend {
    OllamaBackend::open(fake.config(), tokenizer()).expect("open against the double")
}

fn plan(gen_tokens: usize) -> SeriesPlan {
    SeriesPlan {
        run_id: "t".into(),
        trial: infergate::gate::TrialId::new(
            "ollama-test",
            infergate::gate::Unit::backend("ollama"),
            None,
        ),
        sub_series: None,
        scenario: "micro".into(),
        prompt: micro_prompt().to_vec(),
        gen_tokens,
        warmup: 0,
        repetitions: 2,
    }
}

#[test]
fn generate_sends_a_greedy_raw_request_and_reads_engine_phases() {
    let fake = FakeOllama::start(GenerateReply::Body(200, NORMAL), 200);
    let mut backend = open(&fake);
    assert_eq!(backend.info().engine_version, "0.12.6");
    assert_eq!(backend.info().precision, "F16");
    let g = backend.generate(micro_prompt(), 16).expect("generation");

    let sent = fake.last_generate_body();
    assert_eq!(sent["model"], ollama::DEFAULT_MODEL);
    assert_eq!(sent["prompt"], tokenizer().decode(micro_prompt()).unwrap());
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["raw"], true);
    assert_eq!(sent["options"]["num_predict"], 16);
    assert_eq!(sent["options"]["temperature"], 0.0);
    assert_eq!(sent["options"]["top_k"], 1);
    assert_eq!(sent["options"]["seed"], fake.config().seed);
    assert!(sent["keep_alive"].is_string());

    let reply: serde_json::Value = serde_json::from_str(NORMAL).unwrap();
    let ms = |k: &str| reply[k].as_f64().unwrap() / 1e6;
    assert_eq!(g.timings.prompt_tokens, 8);
    assert_eq!(g.tokens.len(), 16);
    assert_eq!(g.timings.prefill_ms, ms("prompt_eval_duration"));
    assert_eq!(g.timings.decode_ms, ms("eval_duration"));
    assert_eq!(g.timings.e2e_ms, ms("total_duration"));
    assert_eq!(g.timings.cold_start_ms, Some(ms("load_duration")));
    assert_eq!(g.early_stop, None);
    assert_eq!(backend.last_reply().map(|r| r.eval_count), Some(Some(16)));
}

#[test]
fn an_early_stop_run_is_recorded_as_projected_and_left_out_of_aggregates() {
    let fake = FakeOllama::start(GenerateReply::Body(200, EARLY_STOP), 200);
    let mut opened: Result<Box<dyn Backend>, BackendError> = Ok(Box::new(open(&fake)));
    let records = run_series(&mut opened, &plan(64));
    assert_eq!(records.len(), 2);
    assert!(
        measured_ok(&records).is_empty(),
        "a projected run must not reach medians or decode fractions"
    );
    let reply: serde_json::Value = serde_json::from_str(EARLY_STOP).unwrap();
    let eval_ms = reply["eval_duration"].as_f64().unwrap() / 1e6;
    for r in &records {
        assert!(r.timings().is_none(), "no timings for aggregates: {r:?}");
        let p = r
            .projected()
            .unwrap_or_else(|| panic!("a projected record, got {:?}", r.outcome));
        assert_eq!(
            (
                p.measured.gen_tokens,
                p.requested_tokens,
                p.stop_reason.as_str()
            ),
            (8, 64, "stop")
        );
        // Measured as Ollama reported; projected with eval_duration / (eval_count − 1) × (64 − 1).
        assert_eq!(p.measured.decode_ms, eval_ms);
        assert_eq!(p.measured.decode_steps, 7);
        let want = eval_ms / 7.0 * 63.0;
        assert!((p.projected_decode_ms.unwrap() - want).abs() < 1e-9);
        let line = serde_json::to_value(r).unwrap();
        assert_eq!(line["status"], "projected", "the flag reaches runs.jsonl");
        assert_eq!(line["requested_tokens"], 64);
        assert_eq!(line["measured"]["gen_tokens"], 8);
        assert_eq!(
            serde_json::from_value::<infergate::measure::RunRecord>(line).unwrap(),
            *r,
            "read back as the same record"
        );
    }
}

#[test]
fn kv_versus_recompute_is_not_checkable_through_ollama_and_sends_nothing() {
    let fake = FakeOllama::start(GenerateReply::Body(200, NORMAL), 200);
    let mut backend = open(&fake);
    match backend.full_recompute_tokens(micro_prompt(), 16) {
        Ok(Recompute::CannotCheck { reason }) => {
            assert!(reason.contains("prompt cache"), "{reason}")
        }
        other => panic!("expected CannotCheck with the reason, got {other:?}"),
    }
    assert!(
        fake.generate_bodies
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "no generation was requested for a check that cannot be made"
    );
}

#[test]
fn a_prompt_cache_hit_is_a_degraded_run_with_the_reason() {
    let fake = FakeOllama::start(GenerateReply::Body(200, CACHE_HIT), 200);
    let mut opened: Result<Box<dyn Backend>, BackendError> = Ok(Box::new(open(&fake)));
    let records = run_series(&mut opened, &plan(16));
    for r in &records {
        match &r.outcome {
            RunOutcome::Degraded { reason } => assert!(reason.contains("prompt cache"), "{reason}"),
            other => panic!("expected a degraded run, got {other:?}"),
        }
    }
}

#[test]
fn a_model_the_server_lacks_fails_with_the_pull_fix() {
    // Not in /api/tags: refused when opening.
    let fake = FakeOllama::start(GenerateReply::Body(200, NORMAL), 200);
    let config = OllamaConfig {
        model: "nonexistent:1b".into(),
        ..fake.config()
    };
    let e = OllamaBackend::open(config.clone(), tokenizer())
        .err()
        .expect("open fails");
    assert!(matches!(e, BackendError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("ollama pull nonexistent:1b"), "{e}");
    match ollama::probe(&config) {
        Availability::Absent { reason, fix } => {
            assert!(reason.contains("does not have model"), "{reason}");
            assert!(fix.contains("ollama pull nonexistent:1b"), "{fix}");
        }
        other => panic!("expected absent, got {other:?}"),
    }
    // Listed but gone by the time of the request (Ollama answers 404 with an error body).
    let gone = FakeOllama::start(GenerateReply::Body(404, NOT_FOUND), 200);
    let e = open(&gone).generate(micro_prompt(), 16).unwrap_err();
    assert!(matches!(e, BackendError::Load { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not found") && e.to_string().contains("ollama pull"),
        "{e}"
    );
}

#[test]
fn a_server_error_is_a_run_error_carrying_ollamas_message() {
    let fake = FakeOllama::start(GenerateReply::Body(500, RUNNER_FAILED), 200);
    let e = open(&fake).generate(micro_prompt(), 16).unwrap_err();
    assert!(matches!(e, BackendError::Run { .. }), "{e:?}");
    assert!(
        e.to_string().contains("500")
            && e.to_string()
                .contains("error was encountered while running the model"),
        "{e}"
    );
    assert_eq!(RunOutcome::from_error(&e).label(), "error");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let fake = FakeOllama::start(GenerateReply::Hang, 200);
    let config = OllamaConfig {
        request_timeout: Duration::from_millis(300),
        ..fake.config()
    };
    let mut backend = OllamaBackend::open(config, tokenizer()).expect("open");
    let e = backend.generate(micro_prompt(), 16).unwrap_err();
    assert!(matches!(e, BackendError::Run { .. }), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[test]
fn a_server_that_is_not_ollama_is_unavailable() {
    let fake = FakeOllama::start(GenerateReply::Body(200, NORMAL), 404);
    let e = OllamaBackend::open(fake.config(), tokenizer())
        .err()
        .expect("open fails");
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("not an Ollama server"), "{e}");
    assert!(matches!(
        ollama::probe(&fake.config()),
        Availability::Absent { .. }
    ));
}

#[test]
fn probe_finds_the_double_and_reports_a_closed_port() {
    let fake = FakeOllama::start(GenerateReply::Body(200, NORMAL), 200);
    match ollama::probe(&fake.config()) {
        Availability::Available { detail } => assert!(
            detail.contains("0.12.6") && detail.contains(ollama::DEFAULT_MODEL),
            "{detail}"
        ),
        other => panic!("expected available, got {other:?}"),
    }
    assert_eq!(
        ollama::server_version(&fake.config()).as_deref(),
        Some("0.12.6")
    );
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let closed = OllamaConfig::new(
        ollama::parse_host(&format!("127.0.0.1:{port}")).unwrap(),
        ollama::DEFAULT_MODEL,
    );
    match ollama::probe(&closed) {
        Availability::Absent { reason, fix } => {
            assert!(
                reason.starts_with(&format!("no Ollama server at 127.0.0.1:{port}")),
                "{reason}"
            );
            assert!(
                fix.contains("ollama serve") && fix.contains("OLLAMA_HOST"),
                "{fix}"
            );
        }
        other => panic!("expected absent, got {other:?}"),
    }
    assert_eq!(ollama::server_version(&closed), None);
    let e = OllamaBackend::open(closed, tokenizer())
        .err()
        .expect("open fails");
    assert!(
        matches!(e, BackendError::Unavailable { .. }) && e.to_string().contains("ollama serve"),
        "{e:?}"
    );
}

/// Runs only where an Ollama server answers at OLLAMA_HOST with INFERGATE_OLLAMA_MODEL pulled.
#[test]
fn live_ollama_generates_a_fixed_length_run() {
    let config = match OllamaConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("live Ollama test skipped: {e}");
            return;
        }
    };
    if let Availability::Absent { reason, fix } = ollama::probe(&config) {
        eprintln!("live Ollama test skipped: {reason} (fix: {fix})");
        return;
    }
    let mut backend = OllamaBackend::open(config, tokenizer()).expect("open the live server");
    eprintln!("live: {:?}", backend.info());
    let prompt = micro_prompt();
    let g = backend.generate(prompt, 32).expect("a live generation");
    eprintln!("live: {g:?}");
    assert_eq!(g.timings.prompt_tokens, prompt.len());
    let generated = g.early_stop.as_ref().map_or(32, |s| s.generated_tokens);
    assert_eq!(g.timings.decode_steps, generated - 1);
    assert!(
        g.timings.prefill_ms > 0.0
            && g.timings.decode_ms > 0.0
            && g.timings.e2e_ms >= g.timings.prefill_ms + g.timings.decode_ms
    );
    match &g.early_stop {
        None => assert_eq!(g.tokens.len(), 32),
        Some(s) => assert!(s.generated_tokens <= 32 && s.requested_tokens == 32),
    }
}
