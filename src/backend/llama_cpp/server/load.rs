//! What loading a GGUF into llama.cpp means: where the layers went ([`Placement`], from the load log)
//! and what each decode step reads ([`gguf_memory_traffic`]).

use crate::backend::MemoryTraffic;

/// Where llama.cpp put the model, read from its load log: `offloaded N/M layers to GPU` and the
/// `<buffer> model buffer size = X MiB` lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub offloaded: Option<(u32, u32)>,
    /// Buffer name (`CUDA0`, `CPU_Mapped`, `CPU`) → MiB.
    pub model_buffers: std::collections::BTreeMap<String, f64>,
}

impl Placement {
    pub fn parse(log: &str) -> Placement {
        let mut p = Placement::default();
        for line in log.lines() {
            if let Some(rest) = line.split("offloaded ").nth(1) {
                if let Some((n, m)) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.split_once('/'))
                {
                    if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                        p.offloaded = Some((n, m));
                    }
                }
            }
            if let Some((left, right)) = line.split_once(" model buffer size =") {
                let name = left.rsplit(':').next().unwrap_or(left).trim().to_string();
                let mib = right
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok());
                if let (false, Some(mib)) = (name.is_empty(), mib) {
                    p.model_buffers.insert(name, mib);
                }
            }
        }
        p
    }

    /// Layers per device (`cuda:0` for `CUDA0` offload, `cpu` for the rest) for the evidence.
    pub fn layers_by_device(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        match self.offloaded {
            Some((n, total)) => {
                let gpu = self
                    .model_buffers
                    .keys()
                    .find_map(|b| b.strip_prefix("CUDA"))
                    .map_or_else(|| "gpu".to_string(), |i| format!("cuda:{i}"));
                if n > 0 {
                    m.insert(gpu, n as usize);
                }
                if total > n {
                    m.insert("cpu".into(), (total - n) as usize);
                }
            }
            None if !self.model_buffers.is_empty() => {
                // A build without GPU backends reports no offload line: everything is on the CPU.
                m.insert("cpu".into(), 1);
            }
            None => {}
        }
        m
    }
}

/// What a llama.cpp decode step reads: every GGUF tensor in its stored type, except `token_embd`
/// when the model has its own `output.weight` (then the embedding is only row-gathered); the KV cache
/// in llama.cpp's default f16.
pub fn gguf_memory_traffic(gguf: &crate::model::GgufFile) -> Option<MemoryTraffic> {
    let config = crate::model::LlamaConfig::from_gguf(gguf).ok()?;
    let tied = gguf.tensor_info("output.weight").is_err();
    let mut weight_bytes = 0u64;
    for t in &gguf.tensors {
        let bytes = gguf.tensor_bytes(t).ok()?.len() as u64;
        let rows = t.dims.get(1).copied().unwrap_or(1).max(1);
        weight_bytes += if t.name == "token_embd.weight" && !tied {
            bytes / rows
        } else {
            bytes
        };
    }
    Some(MemoryTraffic {
        weight_bytes_per_token: weight_bytes,
        kv_bytes_per_position: 2
            * (config.n_layers * config.n_kv_heads * config.head_dim()) as u64
            * 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_read_from_the_load_log() {
        let cuda = "load_tensors: offloading 30 repeating layers to GPU\nload_tensors: offloaded 31/31 layers to GPU\nload_tensors:        CUDA0 model buffer size =    98.23 MiB\nload_tensors:   CPU_Mapped model buffer size =    20.25 MiB\n";
        let p = Placement::parse(cuda);
        assert_eq!(p.offloaded, Some((31, 31)));
        assert_eq!(p.model_buffers.get("CUDA0"), Some(&98.23));
        assert_eq!(
            p.layers_by_device(),
            [("cuda:0".to_string(), 31)].into_iter().collect()
        );
        let cpu = "load_tensors:   CPU_Mapped model buffer size =   118.48 MiB\n";
        let p = Placement::parse(cpu);
        assert_eq!(p.offloaded, None);
        assert_eq!(
            p.layers_by_device(),
            [("cpu".to_string(), 1)].into_iter().collect()
        );
        let partial =
            Placement::parse("offloaded 10/31 layers to GPU\nCUDA0 model buffer size = 30.0 MiB\n");
        assert_eq!(partial.layers_by_device().get("cpu"), Some(&21));
        assert!(Placement::parse("").layers_by_device().is_empty());
    }
}
