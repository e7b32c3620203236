//! The `neurostream` command line. Each subcommand is one file in `src/cli/`.

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "neurostream",
    version,
    about = "Real-time EEG streaming: recordings and simulated EEG through filters to spectral features"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a recording (EDF, EDF+, BDF, XDF): streams, channels, rate, duration, events.
    Info(cli::info::InfoArgs),
    /// Run a recording through a pipeline and print or write per-window features.
    Replay(cli::replay::ReplayArgs),
    /// Generate simulated motor-imagery EEG with cue markers.
    Simulate(cli::simulate::SimulateArgs),
    /// Run a pipeline on its source (a live headset over LSL) and serve its commands.
    Run(cli::run::RunArgs),
    /// Serve decoded commands of simulated EEG over WebSocket (no headset, no download).
    Demo(cli::demo::DemoArgs),
    /// Calibrate a new user with the cue paradigm page, train, go online with feedback.
    Session(cli::session::SessionArgs),
    /// Connect to a running service and print its commands as JSON lines.
    Listen(cli::listen::ListenArgs),
    /// Calibrate a decoder on labelled recordings and write a model file.
    Train(cli::train::TrainArgs),
    /// Cross-validated, held-out or online accuracy of pipelines, per subject.
    Evaluate(cli::evaluate::EvaluateArgs),
    /// Download EEGMMIDB subjects from PhysioNet into a local cache, checking SHA-256 sums.
    Fetch(cli::fetch::FetchArgs),
    /// Search a pipeline's knobs (GA or simulated annealing) for the best CV score; write it.
    Tune(cli::tune::TuneArgs),
    /// Check a pipeline file without running it.
    Check(cli::check::CheckArgs),
    /// Measure throughput and per-window latency of the hot path (and against the Python peer).
    Bench(cli::bench::BenchArgs),
}

/// Colour in the log only for a person at a terminal: never in a file, a pipe or `docker
/// logs` (stderr not a terminal), nor when NO_COLOR is set (https://no-color.org).
fn log_colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(log_colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => cli::info::run(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Session(args) => cli::session::run(args),
        Command::Fetch(args) => cli::fetch::run(args),
        Command::Listen(args) => cli::listen::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Train(args) => cli::train::run(args),
        Command::Evaluate(args) => cli::evaluate::run(args),
        Command::Tune(args) => cli::tune::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some("".into())));
        assert!(!log_colours(true, Some("1".into())));
        assert!(!log_colours(false, None));
    }
}
