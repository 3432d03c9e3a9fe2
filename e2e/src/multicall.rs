//! One binary, three programs: started as `gpupack-device-plugin` or
//! `gpupack-scheduler-ext` (its `argv[0]`), the `e2e` binary runs that
//! component's own command line, unchanged. The harness therefore runs the
//! real components from a binary cargo builds for this package, which tests
//! find through `CARGO_BIN_EXE_e2e`, with no cargo call at test time.

/// `argv[0]` that runs the device plugin.
pub const DEVICE_PLUGIN: &str = "gpupack-device-plugin";
/// `argv[0]` that runs the scheduler extender.
pub const SCHEDULER_EXT: &str = "gpupack-scheduler-ext";

/// Runs the component named by `argv[0]`, if any; returns otherwise.
pub fn dispatch() {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        DEVICE_PLUGIN => {
            device_plugin::cli::main();
            std::process::exit(0)
        }
        SCHEDULER_EXT => match scheduler_ext::cli::main() {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("{SCHEDULER_EXT}: {e:#}");
                std::process::exit(1)
            }
        },
        _ => {}
    }
}
