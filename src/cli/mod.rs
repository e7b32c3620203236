//! One module per subcommand: its arguments and what it does.

pub mod bench;
pub mod check;
pub mod demo;
pub mod evaluate;
pub mod fetch;
pub mod info;
pub mod listen;
pub mod replay;
pub mod run;
pub mod session;
pub mod simulate;
pub mod train;
pub mod tune;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr for `total` units of `unit`; hidden when stderr is not a terminal.
pub fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{eta}} left) {{msg}}"
        ))
        .expect("static template"),
    );
    bar
}

/// Options of the WebSocket service (`demo`, `replay --serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; the default accepts local connections only.
    #[arg(long, default_value = neurostream::service::DEFAULT_BIND)]
    pub bind: std::net::SocketAddr,
    /// Require this bearer token (header `Authorization: Bearer T` or `?token=T`); default:
    /// the NEUROSTREAM_TOKEN environment variable, if set.
    #[arg(long, env = "NEUROSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Maximum simultaneous WebSocket clients.
    #[arg(long, default_value_t = 64)]
    pub max_clients: usize,
    /// Browser origin allowed to connect (repeatable; "*" for any). Default: local pages only.
    #[arg(long = "allow-origin")]
    pub allowed_origins: Vec<String>,
    /// Record the session to this XDF file: raw signal, markers, decoded commands and
    /// feedback, with the pipeline and model, so `neurostream replay FILE.xdf --commands`
    /// recomputes the same commands.
    #[arg(long, value_name = "FILE.xdf")]
    pub record: Option<std::path::PathBuf>,
    /// Messages queued per client before its oldest are dropped (and the loss reported).
    #[arg(long, default_value_t = 256)]
    pub client_queue: usize,
    /// Largest message a client may send, bytes; larger closes the connection (code 1009).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Messages per second a client may send; more are answered with `rate_limited`.
    #[arg(long, default_value_t = 50)]
    pub messages_per_second: u32,
    /// Bytes queued per client before its oldest messages are dropped (and the loss reported).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub client_queue_bytes: usize,
    /// Open HTTP connections that are not WebSocket clients; at the cap the oldest idle one
    /// is closed for a new one.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub header_timeout: f64,
    /// Seconds an HTTP connection may stay open with no request in flight.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    pub idle_timeout: f64,
    /// Seconds a WebSocket client may stay silent (no message, no pong to our pings) before it
    /// is closed (1001) and its place freed.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub ws_idle_timeout: f64,
    /// Host name accepted in the `Host` header besides IP addresses and localhost (repeatable;
    /// "*" for any). Other names get 421: a DNS-rebinding page cannot reach the service.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Accept `feedback` (decoder learning), `rollback` and `recalibrate` from clients with the feedback
    /// right (the feedback token, or the service token when no feedback token is given).
    #[arg(long)]
    pub allow_feedback: bool,
    /// Token that grants the feedback right (`X-Feedback-Token: T` or `?feedback_token=T`);
    /// default: the NEUROSTREAM_FEEDBACK_TOKEN environment variable, if set.
    #[arg(long, env = "NEUROSTREAM_FEEDBACK_TOKEN", hide_env_values = true)]
    pub feedback_token: Option<String>,
    /// Feedback and rollback messages a client may send per minute.
    #[arg(long, default_value_t = 30)]
    pub feedback_per_minute: u32,
    /// Let --record replace an existing file.
    #[arg(long, requires = "record")]
    pub overwrite: bool,
    /// Publish the session to this NATS JetStream server (e.g. nats://127.0.0.1:4222), with
    /// the pipeline's `[nats]` settings if it has some; a pipeline with `[nats]` publishes
    /// without this flag. Default: the NEUROSTREAM_NATS_URL environment variable, if set.
    #[arg(
        long,
        value_name = "URL",
        env = "NEUROSTREAM_NATS_URL",
        hide_env_values = true
    )]
    pub nats: Option<String>,
    /// The session's subject token on NATS (`neurostream.<SESSION>.commands`); default: the
    /// pipeline's nats.session, else the service run's random session id.
    #[arg(long, value_name = "SESSION")]
    pub nats_session: Option<String>,
}

/// A duration flag in seconds: finite and positive.
fn seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value <= 86_400.0 => Ok(value),
        _ => Err(format!(
            "{text:?} is not a number of seconds; allowed: more than 0, at most 86400"
        )),
    }
}

impl ServeArgs {
    pub fn config(&self) -> neurostream::service::ServiceConfig {
        neurostream::service::ServiceConfig {
            bind: self.bind,
            token: self.token.clone(),
            max_clients: self.max_clients,
            allowed_origins: self.allowed_origins.clone(),
            client_queue: self.client_queue,
            max_message_bytes: self.max_message_bytes,
            client_messages_per_second: self.messages_per_second,
            client_queue_bytes: self.client_queue_bytes,
            max_connections: self.max_connections,
            header_timeout: std::time::Duration::from_secs_f64(self.header_timeout),
            idle_timeout: std::time::Duration::from_secs_f64(self.idle_timeout),
            ws_idle_timeout: std::time::Duration::from_secs_f64(self.ws_idle_timeout),
            allowed_hosts: self.allowed_hosts.clone(),
            allow_feedback: self.allow_feedback,
            feedback_token: self.feedback_token.clone(),
            feedback_per_minute: self.feedback_per_minute,
            ..Default::default()
        }
    }

    /// The NATS publisher's settings: the pipeline's `[nats]`, switched on (or its URL
    /// replaced) by --nats, its credentials completed from NEUROSTREAM_NATS_*; `None` when
    /// neither asks for NATS.
    pub fn nats_config(
        &self,
        pipeline: &neurostream::pipeline::PipelineConfig,
    ) -> neurostream::Result<Option<neurostream::config::NatsConfig>> {
        let mut config = match (&pipeline.nats, &self.nats) {
            (None, None) => return Ok(None),
            (Some(config), _) => config.clone(),
            (None, Some(_)) => neurostream::config::NatsConfig::default(),
        };
        config.apply_env();
        if let Some(url) = &self.nats {
            config.url = url.clone();
        }
        if let Some(session) = &self.nats_session {
            config.session = Some(session.clone());
        }
        let mut problems = neurostream::validate::Problems::new();
        config.check(&mut problems);
        problems.into_result("--nats")?;
        Ok(Some(config))
    }
}

/// Where a model calibrated in a session goes: `requested`, or model-<unix time>.json here.
/// Never an existing file: a calibration must not silently replace a model.
fn model_out_path(requested: Option<&std::path::Path>) -> neurostream::Result<std::path::PathBuf> {
    let path = match requested {
        Some(path) => path.to_path_buf(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            std::path::PathBuf::from(format!("model-{secs}.json"))
        }
    };
    if path.exists() {
        return Err(neurostream::Error::config(
            "--model-out",
            format!(
                "{} exists; a session's calibrated model is never written over another \
                 (choose another path or remove it)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// Serve a session: with `model`, decode at once; without, on a pipeline that needs one,
/// calibrate on the stream's cued trials, train, save the model (to `model_out`) and go
/// online without a restart (see [`neurostream::closed_loop`]).
pub fn serve_session(
    args: &ServeArgs,
    source: Box<dyn neurostream::source::Source>,
    pipeline_config: &neurostream::pipeline::PipelineConfig,
    model: Option<neurostream::model::Model>,
    model_out: Option<&std::path::Path>,
) -> neurostream::Result<()> {
    check_record_path(args)?;
    let info = source.stream_info().clone();
    let calibrates = model.is_none() && neurostream::engine::needs_model(pipeline_config);
    let model_out = if calibrates {
        let path = model_out_path(model_out)?;
        tracing::info!(
            "no model given: calibrating on {} cued trials per class ({}), then the model is \
             saved to {} and decoding starts",
            pipeline_config.paradigm.calibration_trials,
            pipeline_config
                .training
                .classes
                .iter()
                .map(|c| format!("{} = {}", c.event, c.name))
                .collect::<Vec<_>>()
                .join(", "),
            path.display()
        );
        Some(path)
    } else {
        None
    };
    let closed_loop = neurostream::closed_loop::ClosedLoop::new(
        pipeline_config,
        &info,
        model.is_some(),
        model_out,
    )?;
    let engine = neurostream::engine::Engine::build(pipeline_config, &info, model.clone())?;
    let mut config = args.config();
    config.nats = args.nats_config(pipeline_config)?;
    if let Some(path) = &args.record {
        config.record = Some(neurostream::record::RecordConfig {
            path: path.clone(),
            session: neurostream::record::Session::new(pipeline_config, model.as_ref())?,
            overwrite: args.overwrite,
        });
    }
    run_service(config, |config| async move {
        neurostream::service::Service::start_session(config, source, engine, closed_loop).await
    })
}

/// Run the service until Ctrl-C or the end of a finite source. `config` and `model` are what
/// `pipeline` was built from (its `[control]` makes the commands; both are stored in a
/// `--record`ing so it can be replayed exactly).
pub fn serve(
    args: &ServeArgs,
    source: Box<dyn neurostream::source::Source>,
    pipeline: neurostream::pipeline::Pipeline,
    pipeline_config: &neurostream::pipeline::PipelineConfig,
    model: Option<&neurostream::model::Model>,
) -> neurostream::Result<()> {
    check_record_path(args)?;
    let controller = if pipeline.class_names().is_empty() {
        None
    } else {
        // The threshold the model learned at calibration, as `Engine::build` and a replay
        // use it (unless the file sets one).
        Some(pipeline_config.control.build_with(
            pipeline.class_names(),
            model.and_then(|m| m.operating_point.as_ref()),
        )?)
    };
    let mut config = args.config();
    config.nats = args.nats_config(pipeline_config)?;
    if let Some(path) = &args.record {
        config.record = Some(neurostream::record::RecordConfig {
            path: path.clone(),
            session: neurostream::record::Session::new(pipeline_config, model)?,
            overwrite: args.overwrite,
        });
    }
    run_service(config, |config| async move {
        neurostream::service::Service::start(config, source, pipeline, controller).await
    })
}

/// Resolves with the signal's name on Ctrl-C (SIGINT) or SIGTERM (`docker stop`, systemd):
/// both stop the same clean way (close frames, recording footer, exit 0).
pub fn stop_signal(
) -> neurostream::Result<impl std::future::Future<Output = &'static str> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind)
            .map_err(|e| neurostream::Error::Unsupported(format!("cannot listen for {name}: {e}")))
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "Ctrl-C",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// Refuse an existing --record file before anything starts (the recorder's exclusive
/// create is the real guard), so the message names the flag.
fn check_record_path(args: &ServeArgs) -> neurostream::Result<()> {
    match &args.record {
        Some(path) if !args.overwrite && path.exists() => Err(neurostream::Error::config(
            "--record",
            format!(
                "{} exists; pass --overwrite to replace it, or choose another path",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Start the service `start` makes and serve until Ctrl-C or the end of a finite source.
fn run_service<F, Fut>(
    config: neurostream::service::ServiceConfig,
    start: F,
) -> neurostream::Result<()>
where
    F: FnOnce(neurostream::service::ServiceConfig) -> Fut,
    Fut: std::future::Future<Output = neurostream::Result<neurostream::service::Service>>,
{
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        neurostream::Error::Unsupported(format!("cannot start the async runtime: {e}"))
    })?;
    runtime.block_on(async move {
        let service = start(config).await?;
        tracing::info!(
            "serving ws://{}/ws (metrics: http://{}/metrics); Ctrl-C to stop",
            service.local_addr(),
            service.local_addr()
        );
        tracing::info!(
            "dashboard: http://{0}/  paradigm page: http://{0}/paradigm",
            service.local_addr()
        );
        let shutdown = service.shutdown();
        let stop = stop_signal()?;
        tokio::spawn(async move {
            let signal = stop.await;
            tracing::info!("{signal}: shutting down");
            shutdown.trigger();
        });
        let summary = service.wait().await?;
        tracing::info!(
            samples = summary.samples,
            windows = summary.windows,
            commands = summary.commands,
            feedback = summary.feedback_applied,
            "service stopped"
        );
        if let Some((trials, hits)) = summary.online_trials {
            tracing::info!(
                "online cued trials: {hits} of {trials} right ({:.3})",
                hits as f64 / trials.max(1) as f64
            );
        }
        if summary.recorder_dropped > 0 {
            return Err(neurostream::Error::Data(format!(
                "the recording lost {} item(s): the disk could not keep up",
                summary.recorder_dropped
            )));
        }
        Ok(())
    })
}
