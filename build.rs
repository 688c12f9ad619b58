// Bake an rpath to libtorch into the binaries so that neither `cargo run`, `cargo test` nor an
// installed binary needs LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // See `mkl_serv_intel_cpu_true` in src/main.rs: the binary's definition must be in its
        // dynamic symbol table to take precedence over the one inside libtorch_cpu.so.
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=mkl_serv_intel_cpu_true");
        // Nothing in the binary names a symbol of libtorch_cuda, so `--as-needed` drops it and
        // libtorch never registers its CUDA backend (`tch::Cuda::is_available()` is false even on
        // a GPU). A CUDA build keeps it; a CPU build must not, as it needs cuBLAS and cuDNN.
        if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
            println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // Runs record the commit they were built from.
    if let Ok(out) = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output() {
        if out.status.success() {
            println!("cargo:rustc-env=TOOLKIT_GIT_COMMIT={}", String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
}
