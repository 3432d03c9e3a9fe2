//! The `gpupack-device-plugin` command line, as a library function so that
//! other binaries (the end-to-end harness) can run the very same program.

use crate::app;
use crate::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// One line on stderr and exit status 1: the operator needs the cause, not
/// a chain of wrappers.
fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("gpupack-device-plugin: {msg}");
    std::process::exit(1)
}

/// Runs the command line: what `gpupack-device-plugin` does.
pub fn main() {
    let cli = match Cli::load_from(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let cfg = cli.config;
    init_tracing(cfg.log_format);
    if let Err(e) = cfg.validate() {
        fail(e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(format!("cannot start the async runtime: {e}")),
    };
    let backend = match app::backend(&cfg) {
        Ok(b) => b,
        Err(e) => fail(e),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Inventory => {
            let node = cfg.node_name.clone().unwrap_or_else(|| "local".into());
            match backend.discover(&app::discovery_context(&cfg, &node)) {
                Ok(inv) => match serde_json::to_string_pretty(&inv) {
                    Ok(text) => println!("{text}"),
                    Err(e) => fail(e),
                },
                Err(e) => fail(e),
            }
        }
        Command::Run => {
            if let Err(e) = runtime.block_on(app::run(cfg, backend)) {
                fail(format!("{e:#}"));
            }
        }
    }
}
