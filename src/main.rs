//! careplane's entry point: parse arguments, run the command, map the result to an exit
//! code (0 success / no changes, 1 error, 2 changes present with `--detailed-exitcode`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    careplane::output::install_panic_hook();
    let cli = careplane::cli::Cli::parse();
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
