//! Entry point: parse the command line, start logging, run, map the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match aupgate::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AUPGATE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match aupgate::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<aupgate::cli::CheckFailed>().is_none()
                && e.downcast_ref::<aupgate::cli::AuditAltered>().is_none()
            {
                eprintln!("aupgate: {e:#}");
            }
            ExitCode::from(aupgate::cli::exit_status(&e))
        }
    }
}
