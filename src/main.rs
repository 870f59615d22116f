//! careplane's entry point: parse arguments, run the command, map the result to an exit
//! code (0 success / no changes, 1 error, 2 changes present with `--detailed-exitcode` or
//! drift, 64 a usage error: an unknown flag, a missing argument).

use std::process::ExitCode;

fn main() -> ExitCode {
    careplane::output::install_panic_hook();
    let cli = match careplane::cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    if cli.verbose {
        let log = std::env::var("CAREPLANE_LOG").unwrap_or_default();
        if !log.split(',').any(|x| x.trim() == "requests") {
            let log = if log.is_empty() {
                "requests".to_owned()
            } else {
                format!("{log},requests")
            };
            // SAFETY: no other thread exists yet (the runtime starts below), so nothing
            // reads the environment concurrently.
            unsafe { std::env::set_var("CAREPLANE_LOG", log) };
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            careplane::output::stderr(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(careplane::cli::run(cli));
    ExitCode::from(code)
}
