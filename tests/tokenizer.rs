//! The tokenizer built from the real SmolLM2 GGUF against llama.cpp's own tokenizer (`llama-tokenize`),
//! via fixtures made by `scripts/make_tokenizer_fixtures.py`.

use std::sync::OnceLock;

use infergate::assets;
use infergate::model::{GgufFile, Tokenizer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const FIXTURE: &str = include_str!("data/tokenizer/smollm2_llama_cpp.json");

#[derive(Deserialize)]
struct Fixture {
    gguf_sha256: String,
    cases: Vec<Case>,
    wiki_prefix: WikiPrefix,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct WikiPrefix {
    text_sha256: String,
    chars: usize,
    token_count: usize,
    ids_sha256: String,
}

fn fixture() -> Fixture {
    serde_json::from_str(FIXTURE).unwrap_or_else(|e| panic!("fixture does not parse: {e}"))
}

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = infergate::model::catalog::default_model()
            .and_then(|m| m.gguf_path())
            .unwrap_or_else(|e| panic!("{e}"));
        let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn ids_sha256(ids: &[u32]) -> String {
    let joined = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    hex::encode(Sha256::digest(joined.as_bytes()))
}

#[test]
fn fixtures_were_made_from_the_pinned_assets() {
    let f = fixture();
    assert_eq!(
        f.gguf_sha256,
        infergate::model::catalog::default_model().unwrap().sha256
    );
    assert_eq!(f.wiki_prefix.text_sha256, assets::WIKI_TEXT.member_sha256);
    assert!(f.cases.len() >= 40, "only {} cases", f.cases.len());
}

#[test]
fn ids_equal_llama_cpp_for_every_fixture() {
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in fixture().cases {
        let ours = tok
            .encode(&case.text)
            .unwrap_or_else(|e| panic!("{:?}: {e}", case.text));
        if ours != case.ids {
            failures.push(format!(
                "{:?}\n  llama.cpp: {:?}\n  ours:      {:?}",
                case.text, case.ids, ours
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_of_encode_round_trips() {
    let tok = tokenizer();
    for case in fixture().cases {
        let ids = tok.encode(&case.text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tok.decode(&ids).unwrap_or_else(|e| panic!("{e}")),
            case.text
        );
        // llama.cpp's ids decode to the same text too.
        assert_eq!(
            tok.decode(&case.ids).unwrap_or_else(|e| panic!("{e}")),
            case.text
        );
    }
}

#[test]
fn wiki_prefix_matches_llama_cpp_token_count_and_ids() {
    let f = fixture();
    let path = assets::ensure(&assets::WIKI_TEXT).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let prefix: String = text.chars().take(f.wiki_prefix.chars).collect();
    let ids = tokenizer()
        .encode(&prefix)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids.len(), f.wiki_prefix.token_count);
    assert_eq!(ids_sha256(&ids), f.wiki_prefix.ids_sha256);
}

#[test]
fn special_ids_and_vocabulary_come_from_the_gguf() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.encode("<|im_start|>").unwrap_or_default(), vec![1]);
    assert_eq!(tok.encode("<|im_end|>").unwrap_or_default(), vec![2]);
    assert_eq!(tok.encode("<|endoftext|>").unwrap_or_default(), vec![0]);
    assert!(
        tok.decode(&[49_152]).is_err(),
        "an id past the vocabulary must be an error"
    );
}

/// Live comparison with `llama-tokenize` on the first ~100 KB of the wiki text. Builds llama.cpp if it
/// is not cached (about 6 minutes on 2 cores), hence ignored by default:
/// `cargo test --test tokenizer -- --ignored`.
#[test]
#[ignore = "needs llama.cpp built (infergate::assets::llama_cpp::ensure_built)"]
fn wiki_100kb_matches_live_llama_tokenize() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let build = infergate::assets::llama_cpp::ensure_built().unwrap_or_else(|e| panic!("{e}"));
    let gguf = infergate::model::catalog::default_model()
        .and_then(|m| m.gguf_path())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(
        assets::ensure(&assets::WIKI_TEXT).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut end = 100_000.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = &text[..end];

    let mut child = Command::new(&build.llama_tokenize)
        .arg("-m")
        .arg(&gguf)
        .args([
            "--stdin",
            "--no-escape",
            "--ids",
            "--no-bos",
            "--log-disable",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", build.llama_tokenize.display()));
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(prefix.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no id list in {stdout}"));
    let theirs: Vec<u32> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));

    let ours = tokenizer().encode(prefix).unwrap_or_else(|e| panic!("{e}"));
    let first_diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    eprintln!(
        "wiki prefix: {} bytes, llama.cpp {} tokens, ours {} tokens",
        prefix.len(),
        theirs.len(),
        ours.len()
    );
    assert_eq!(first_diff, None, "first difference at token {first_diff:?}");
    assert_eq!(ours.len(), theirs.len());
}
