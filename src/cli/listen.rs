//! `neurostream listen URL [--token T]`: connect to a running service and print its commands
//! as JSON lines (everything else the server sends goes to the log with `--all`).

use clap::Args;
use neurostream::Result;

#[derive(Args)]
pub struct ListenArgs {
    /// WebSocket URL of the service, e.g. ws://127.0.0.1:8765/ws.
    pub url: String,
    /// Bearer token, when the service requires one (default: NEUROSTREAM_TOKEN).
    #[arg(long, env = "NEUROSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print every message, not only commands.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: ListenArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| neurostream::Error::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let signal = super::stop_signal()?;
        let stop = async {
            signal.await;
        };
        neurostream::service::client::listen(
            &args.url,
            args.token.as_deref(),
            stop,
            |text, kind| {
                use std::io::Write;
                match kind {
                    "command" => {}
                    "hello" | "status" | "error" if !args.all => {
                        tracing::info!("{text}");
                        return true;
                    }
                    _ if !args.all => return true,
                    _ => {}
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
            },
        )
        .await
    })
}
