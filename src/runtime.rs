//! ONNX Runtime: finding its shared library without user-exported variables, one environment
//! per process, and sessions on the CPU or a CUDA GPU. The exporter's parity tests and the
//! evaluator open every model through `session`.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

pub use crate::device::Device;
pub use shared_weights::SharedWeights;

mod shared_weights;

/// The ONNX Runtime release the toolkit is built and tested against (`scripts/setup.sh`
/// extracts it from the PyPI `onnxruntime` wheel into `.venv/ort/`).
pub const LIBRARY_NAME: &str = "libonnxruntime.so.1.31.1";

/// Set this to the library file to override the search.
pub const LIBRARY_ENV: &str = "TOOLKIT_ORT_LIB";

/// The execution provider a session was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
}

impl Provider {
    /// ONNX Runtime's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to open a model.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub device: Device,
    /// Threads inside one operator; `None` lets ONNX Runtime use one per physical core.
    pub intra_threads: Option<usize>,
    pub optimization: GraphOptimizationLevel,
    /// Where ONNX Runtime should write the model after its graph optimisations (to see which
    /// fusions it made).
    pub optimized_model: Option<PathBuf>,
    /// Weights every session of this configuration takes from memory instead of the model's
    /// file, packed once for all of them (`shared_weights`).
    pub shared: Option<SharedWeights>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            intra_threads: None,
            optimization: GraphOptimizationLevel::All,
            optimized_model: None,
            shared: None,
        }
    }
}

/// An open model, with the provider it runs on.
pub struct RuntimeSession {
    pub session: Session,
    pub provider: Provider,
    /// Why `Device::Auto` did not get CUDA, when it did not.
    pub fallback_reason: Option<String>,
}

/// Opens `path` on `device` with default options.
pub fn session(path: &Path, device: Device) -> Result<RuntimeSession> {
    session_with(path, &SessionConfig { device, ..SessionConfig::default() })
}

/// Opens `path` as configured. `Device::Cuda` fails when CUDA cannot run; `Device::Auto` falls
/// back to the CPU and says why in `fallback_reason`.
pub fn session_with(path: &Path, config: &SessionConfig) -> Result<RuntimeSession> {
    let env = environment()?;
    let open = |provider: Provider| -> Result<Session> {
        let mut builder = builder(env, config)?;
        builder = match provider {
            Provider::Cuda => with_cuda(builder)?,
            Provider::Cpu => builder
                .with_config_entry("optimization.disable_specified_optimizers", CPU_DISABLED_FUSIONS)
                .map_err(ort::Error::<()>::from)?,
        };
        builder
            .commit_from_file(path)
            .map_err(|e| anyhow!("ONNX Runtime could not load {} on {provider}: {e}", path.display()))
    };
    match config.device {
        Device::Cpu => {
            Ok(RuntimeSession { session: open(Provider::Cpu)?, provider: Provider::Cpu, fallback_reason: None })
        }
        Device::Cuda => {
            let session = open(Provider::Cuda).context("`--device cuda` was asked for")?;
            Ok(RuntimeSession { session, provider: Provider::Cuda, fallback_reason: None })
        }
        Device::Auto => match open(Provider::Cuda) {
            Ok(session) => Ok(RuntimeSession { session, provider: Provider::Cuda, fallback_reason: None }),
            Err(err) => Ok(RuntimeSession {
                session: open(Provider::Cpu)?,
                provider: Provider::Cpu,
                fallback_reason: Some(format!("{err:#}")),
            }),
        },
    }
}

/// ONNX Runtime's CPU kernel for its fusion of a residual `Add` and the `LayerNormalization`
/// after it (SkipLayerNormalization) is slower than the two ops it replaces: without it,
/// bench-eval's e5-small export ran 17% faster in fp32 and 19% in int8 (ONNX Runtime 1.31.1,
/// AMD EPYC, one thread). CUDA keeps the fusion.
const CPU_DISABLED_FUSIONS: &str = "SkipLayerNormFusion";

fn builder(env: &Environment, config: &SessionConfig) -> Result<SessionBuilder> {
    let mut builder =
        Session::builder(env)?.with_optimization_level(config.optimization).map_err(ort::Error::<()>::from)?;
    if let Some(n) = config.intra_threads {
        builder = builder.with_intra_threads(n).map_err(ort::Error::<()>::from)?;
    }
    // ONNX Runtime turns DequantizeLinear + MatMul (an export's int8 language adapters) into
    // MatMulNBits, whose default accuracy level 4 also rounds the activations to int8: level 1
    // keeps them float, so the model computes what its graph says (float MatMuls on the
    // dequantised weights).
    builder = builder.with_config_entry("session.qdq_matmulnbits_accuracy_level", "1").map_err(ort::Error::<()>::from)?;
    if let Some(path) = &config.optimized_model {
        builder = builder.with_optimized_model_path(path).map_err(ort::Error::<()>::from)?;
    }
    if let Some(shared) = &config.shared {
        builder = builder.with_prepacked_weights(&shared.prepacked).map_err(ort::Error::<()>::from)?;
        for (name, value) in &shared.initializers {
            builder = builder.with_initializer(name, Arc::clone(value)).map_err(ort::Error::<()>::from)?;
        }
    }
    Ok(builder)
}

#[cfg(feature = "cuda")]
fn with_cuda(builder: SessionBuilder) -> Result<SessionBuilder> {
    static PRELOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PRELOADED
        .get_or_init(|| library_path().and_then(|lib| preload_cuda_libraries(&lib)).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))?;
    let cuda = ort::ep::CUDA::default().build().error_on_failure();
    builder
        .with_execution_providers([cuda])
        .map_err(|e| anyhow!("the CUDA execution provider could not start: {}", ort::Error::<()>::from(e)))
}

/// The CUDA provider of the `onnxruntime-gpu` library needs cuBLAS, cuRAND, cuDNN, ... by soname,
/// and the nvidia-* wheels that hold them are on no loader path of this binary (Python's
/// `onnxruntime` preloads them the same way). `scripts/setup.sh --cuda` lists them, relative to
/// the library's folder, in `cuda-libraries.txt`; loading each globally first lets the provider
/// resolve them. Without the list, the system's loader path must have them.
#[cfg(feature = "cuda")]
fn preload_cuda_libraries(ort_library: &Path) -> Result<()> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;

    let list = ort_library.with_file_name(CUDA_LIBRARY_LIST);
    let text = match std::fs::read_to_string(&list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", list.display())),
    };
    let dir = list.parent().unwrap_or(Path::new("."));
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let path = dir.join(line.trim());
        let name = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("{}:{}: a NUL byte in the path", list.display(), number + 1))?;
        // SAFETY: `name` is a valid C string; the handle is never closed, on purpose: the
        // provider needs the library for the life of the process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlopen failed, so dlerror returns a valid C string describing why.
            let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
            bail!("{}:{}: cannot load {}: {why}", list.display(), number + 1, path.display());
        }
    }
    Ok(())
}

/// Written by `scripts/setup.sh --cuda` beside the ONNX Runtime library.
#[cfg(feature = "cuda")]
const CUDA_LIBRARY_LIST: &str = "cuda-libraries.txt";

#[cfg(not(feature = "cuda"))]
fn with_cuda(_builder: SessionBuilder) -> Result<SessionBuilder> {
    bail!(
        "this build of toolkit has no CUDA support: `scripts/setup.sh --cuda` installs the CUDA libraries and \
         builds it with `--features cuda`"
    )
}

/// The process's ONNX Runtime environment, created on first use from the library `library_path`
/// finds.
pub fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path().map_err(|e| format!("{e:#}"))?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?;
        builder.with_name("toolkit").with_telemetry(false).build().map_err(|e| format!("starting ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// The ONNX Runtime library: `$TOOLKIT_ORT_LIB` if set, else beside the executable, else in
/// `.venv/ort/` of a directory above the executable (a checkout running `target/*/toolkit`),
/// else in `.venv/ort/` of the source tree this binary was built from.
pub fn library_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{LIBRARY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let candidates = library_candidates(std::env::current_exe().ok().as_deref());
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let searched: Vec<String> = candidates.iter().map(|p| format!("  {}", p.display())).collect();
        anyhow!(
            "ONNX Runtime ({LIBRARY_NAME}) not found; run scripts/setup.sh or set {LIBRARY_ENV}. Searched:\n{}",
            searched.join("\n")
        )
    })
}

fn library_candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join(LIBRARY_NAME));
        out.extend(dir.ancestors().skip(1).map(|a| a.join(".venv/ort").join(LIBRARY_NAME)));
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/ort").join(LIBRARY_NAME));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_from_the_executable_up_then_to_the_source_tree() {
        let c = library_candidates(Some(Path::new("/a/b/target/release/toolkit")));
        assert_eq!(c[0], Path::new("/a/b/target/release").join(LIBRARY_NAME));
        assert_eq!(c[1], Path::new("/a/b/target/.venv/ort").join(LIBRARY_NAME));
        assert!(c.contains(&Path::new("/a/b/.venv/ort").join(LIBRARY_NAME)));
        assert_eq!(c.last().unwrap(), &Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/ort").join(LIBRARY_NAME));
    }

    #[test]
    fn library_is_found_in_this_checkout() {
        if std::env::var_os(LIBRARY_ENV).is_none() && !Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/ort").exists()
        {
            eprintln!("skipping: .venv/ort absent (run scripts/setup.sh)");
            return;
        }
        assert!(library_path().unwrap().is_file());
    }
}
