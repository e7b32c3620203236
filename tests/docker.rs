//! The container files, checked without a Docker engine (CI has none): `docker/Dockerfile` is
//! parsed into stages and instructions and held to what the deployment promises — a
//! multi-stage build whose builder can compile this crate, a slim runtime stage that runs as a
//! non-root user, exposes the service port and checks `/health` — and `docker/compose.yaml`
//! and the image's commands are checked against the CLI they call. (`hadolint
//! docker/Dockerfile` lints style; this checks that the files fit this repository.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a str> + 'a {
        let keyword = keyword.to_owned();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else if trimmed.starts_with('#') {
            continue; // a comment between continuation lines
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("FROM with unexpected arguments: {other:?}"),
            };
            stages.push(Stage {
                base: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before the first FROM"))
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// The words of an exec-form (`["a", "b"]`) instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

fn service_port() -> u16 {
    neurostream::service::DEFAULT_BIND
        .parse::<std::net::SocketAddr>()
        .expect("DEFAULT_BIND")
        .port()
}

fn version_of(text: &str) -> (u32, u32) {
    let mut parts = text
        .split('.')
        .map(|p| p.parse::<u32>().expect("version number"));
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

#[test]
fn dockerfile_stages_user_port_and_healthcheck() {
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    assert!(
        stages.len() >= 2,
        "multi-stage build expected, got {stages:#?}"
    );
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    assert_eq!(names.len(), stages.len(), "every stage is named");

    // Builder: a Rust toolchain at least as new as the crate's rust-version.
    let builder = &stages[0];
    let tag = builder
        .base
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("builder is not a rust image: {}", builder.base));
    let manifest = read("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    let image_version = tag.split('-').next().expect("version in the tag");
    assert!(
        version_of(image_version) >= version_of(wanted),
        "builder {tag} is older than rust-version {wanted}"
    );
    assert!(
        builder.all("RUN").any(|r| r.contains("cargo build")
            && r.contains("--release")
            && r.contains("--locked")),
        "the builder runs cargo build --release --locked"
    );

    // The runtime stage: slim, no toolchain, binary copied from an earlier stage.
    let runtime = stages.last().unwrap();
    assert!(
        runtime.base.contains("slim") && !runtime.base.starts_with("rust"),
        "slim runtime base expected, got {}",
        runtime.base
    );
    let earlier: Vec<&str> = stages[..stages.len() - 1]
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    assert!(
        runtime.all("COPY").any(|c| earlier
            .iter()
            .any(|n| c.starts_with(&format!("--from={n} ")) && c.contains("neurostream"))),
        "the runtime copies the binary from the builder"
    );

    // Non-root: the last USER of the runtime stage is neither root nor uid 0, and comes before
    // the entry point.
    let user = runtime.last("USER").expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as root: USER {user}");
    let position = |k: &str| runtime.instructions.iter().rposition(|i| i.keyword == k);
    assert!(
        position("USER") < position("ENTRYPOINT"),
        "USER after ENTRYPOINT"
    );
    if uid.chars().all(|c| c.is_ascii_digit()) {
        assert!(
            runtime
                .all("RUN")
                .any(|r| r.contains(&format!("--uid {uid}"))),
            "uid {uid} is never created"
        );
    }

    // The service port, the health check, and a bind address reachable from outside.
    let port = service_port();
    let exposed: Vec<u16> = runtime
        .all("EXPOSE")
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, vec![port]);
    let health = runtime.last("HEALTHCHECK").expect("HEALTHCHECK");
    assert!(health.contains("/health"), "{health}");
    assert!(health.contains(&format!("/{port} ")), "{health}");
    let server = read("src/service/server/mod.rs");
    assert!(
        server.contains(r#".route("/health""#),
        "the service has no /health route"
    );
    let entry = exec_form(runtime.last("ENTRYPOINT").expect("ENTRYPOINT"));
    assert_eq!(entry, vec!["neurostream"]);
    let cmd = exec_form(runtime.last("CMD").expect("CMD"));
    assert_eq!(
        cmd,
        vec![
            "demo".to_string(),
            "--bind".into(),
            format!("0.0.0.0:{port}")
        ]
    );
}

#[test]
fn builder_copies_exist_and_are_not_docker_ignored() {
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let mut sources = 0;
    for copy in stages[0].all("COPY") {
        assert!(!copy.starts_with("--from"), "{copy}");
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            sources += 1;
            assert!(
                root().join(source).exists(),
                "COPY {source}: not in the repository"
            );
            let top = Path::new(source).components().next().unwrap();
            let top = top.as_os_str().to_str().unwrap();
            assert!(
                !ignored.iter().any(|i| i == top),
                "COPY {source}, but .dockerignore excludes {top}"
            );
        }
    }
    // Everything the crate needs to compile: the manifest, the lock file, the sources, the
    // files compiled in with include_str!, and the benches the manifest names.
    let copied: Vec<&str> = stages[0]
        .all("COPY")
        .flat_map(|c| {
            let w: Vec<&str> = c.split_whitespace().collect();
            w[..w.len() - 1].to_vec()
        })
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "pipelines",
        "web",
        "benches",
        ".cargo",
    ] {
        assert!(
            copied.contains(&needed),
            "the builder does not copy {needed}"
        );
    }
    assert!(sources >= 7);

    // Files compiled into the binary (include_str!/include_bytes! anywhere under src/) must be
    // in the builder too, or the image build fails where cargo build did not.
    let mut included = Vec::new();
    collect_includes(&root().join("src"), &mut included);
    assert!(
        !included.is_empty(),
        "no include_str!/include_bytes! found under src/"
    );
    for path in included {
        let relative = path
            .strip_prefix(root().canonicalize().expect("repository root"))
            .unwrap_or_else(|_| panic!("{} is outside the repository", path.display()));
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap();
        assert!(
            copied.contains(&top) || copied.contains(&relative.to_str().unwrap()),
            "{} is compiled in (include_*!) but the builder does not copy {top}",
            relative.display()
        );
        assert!(
            !ignored.iter().any(|i| i == top),
            "{} is compiled in but .dockerignore excludes {top}",
            relative.display()
        );
    }
}

/// Every file named by `include_str!("...")` or `include_bytes!("...")` in the Rust sources
/// under `dir`, resolved against the including file's folder.
fn collect_includes(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_includes(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = &text[at + macro_name.len()..];
                let name = &rest[..rest.find('"').expect("closing quote")];
                let resolved = path.parent().unwrap().join(name);
                let resolved = resolved
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
                out.push(resolved);
            }
        }
    }
}

#[test]
fn compose_runs_the_simulator_service_with_commands_the_cli_accepts() {
    let compose = read("docker/compose.yaml");
    let port = service_port();
    for needed in [
        "dockerfile: docker/Dockerfile".to_string(),
        "context: ..".to_string(),
        format!("\"127.0.0.1:{port}:{port}\""),
        "condition: service_healthy".to_string(),
    ] {
        assert!(compose.contains(&needed), "compose.yaml lacks {needed}");
    }
    // Every `command:` in compose.yaml, plus the image's CMD, must parse with this CLI.
    let mut commands: Vec<Vec<String>> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .map(exec_form)
        .collect();
    assert_eq!(commands.len(), 2, "the service and the listener");
    assert_eq!(
        commands[0],
        vec![
            "demo".to_string(),
            "--bind".into(),
            format!("0.0.0.0:{port}"),
            "--allowed-host".into(),
            "neurostream".into(),
        ]
    );
    assert_eq!(
        commands[1],
        vec!["listen".to_string(), format!("ws://neurostream:{port}/ws")]
    );
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    commands.push(exec_form(stages.last().unwrap().last("CMD").unwrap()));
    for args in commands {
        // `--help` last: clap parses and validates the arguments before it, then prints help
        // and exits 0 without running anything.
        let out = Command::new(env!("CARGO_BIN_EXE_neurostream"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run neurostream");
        assert!(
            out.status.success(),
            "neurostream {args:?} is rejected: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The YAML block of one compose service: its lines up to the next top-level key or service.
fn compose_service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = compose.lines().skip_while(|l| *l != format!("  {name}:"));
    let header = lines.next().unwrap_or_else(|| panic!("no service {name}"));
    std::iter::once(header)
        .chain(lines.take_while(|l| {
            l.is_empty() || l.starts_with("    ") || l.trim_start().starts_with('#')
        }))
        .collect()
}

#[test]
fn container_stops_on_sigterm_builds_with_caches_and_has_what_fetch_and_record_need() {
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    let runtime = stages.last().unwrap();
    assert_eq!(runtime.last("STOPSIGNAL"), Some("SIGTERM"));
    // fetch: curl and the CA bundle in the image, and a HOME for its cache.
    assert!(
        runtime.all("RUN").any(|r| r.contains("apt-get install")
            && r.contains(" curl")
            && r.contains("ca-certificates")),
        "the runtime installs curl and ca-certificates"
    );
    assert!(
        runtime.all("ENV").any(|e| e.starts_with("HOME=/")),
        "HOME is set"
    );
    // A source edit does not rebuild the dependencies: the registry and target/ are cache
    // mounts of the cargo build.
    let build = stages[0]
        .all("RUN")
        .find(|r| r.contains("cargo build"))
        .unwrap();
    for target in ["/usr/local/cargo/registry", "/src/target"] {
        assert!(
            build.contains("--mount=type=cache,") && build.contains(&format!("target={target}")),
            "no cache mount on {target}: {build}"
        );
    }

    let compose = read("docker/compose.yaml");
    assert!(
        compose.lines().any(|l| l == "name: neurostream"),
        "compose has no name:"
    );
    let service = compose_service(&compose, "neurostream");
    let listener = compose_service(&compose, "listener");
    assert!(service.contains(&"    pull_policy: build"), "{service:#?}");
    assert!(
        listener.contains(&"    pull_policy: never"),
        "{listener:#?}"
    );
    // The listener serves nothing: the image's health check (on the service port) is off.
    let health = listener
        .iter()
        .position(|l| *l == "    healthcheck:")
        .expect("listener healthcheck");
    assert_eq!(listener[health + 1].trim(), "disable: true");
    for block in [&service, &listener] {
        // Read-only root, but a writable /tmp (the working directory, --record FILE).
        assert!(block.contains(&"    read_only: true"));
        let tmpfs = block
            .iter()
            .position(|l| *l == "    tmpfs:")
            .expect("tmpfs");
        assert_eq!(block[tmpfs + 1].trim(), "- /tmp");
        assert!(block.contains(&"    stop_signal: SIGTERM"));
    }
    assert!(
        service
            .iter()
            .any(|l| l.trim() == "- cache:/home/neurostream/.cache"),
        "the fetch cache is a volume"
    );
}

#[test]
fn parser_handles_continuations_comments_and_stages() {
    let stages = parse_dockerfile(
        "# c\nFROM a AS one\nRUN x \\\n  # inner\n  && y\nFROM b:1-slim AS two\nUSER 1:1\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].last("RUN"), Some("x  && y"));
    assert_eq!(stages[1].base, "b:1-slim");
    assert_eq!(stages[1].last("USER"), Some("1:1"));
}

// ---------------------------------------------------------------------------------------
// The real thing, opt-in: NEUROSTREAM_DOCKER_TEST=1 (a cold image build compiles every
// dependency and liblsl: 10+ minutes on 2 cores, so CI does not run it by default).
// NEUROSTREAM_DOCKER: the docker client (default `docker`; it must do BuildKit builds);
// NEUROSTREAM_DOCKER_BUILD_ARGS: extra `docker build` words (e.g. `--network host`).

fn docker_cli() -> String {
    std::env::var("NEUROSTREAM_DOCKER").unwrap_or_else(|_| "docker".into())
}

/// `docker ARGS`: stdout, or a panic with stderr.
fn docker(args: &[&str]) -> String {
    let out = Command::new(docker_cli())
        .args(args)
        .env("DOCKER_BUILDKIT", "1")
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", docker_cli()));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the test container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(docker_cli())
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// Polls `check` every 250 ms for up to `patience`; its last answer.
fn poll<T>(patience: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn container_builds_serves_commands_and_stops_on_sigterm() {
    if std::env::var_os("NEUROSTREAM_DOCKER_TEST").is_none() {
        eprintln!("skipped: set NEUROSTREAM_DOCKER_TEST=1 (needs a Docker engine) to build and run the image");
        return;
    }
    let image = format!("neurostream:test-{}", std::process::id());
    let extra = std::env::var("NEUROSTREAM_DOCKER_BUILD_ARGS").unwrap_or_default();
    let mut build = vec!["build", "-f", "docker/Dockerfile", "-t", &image];
    build.extend(extra.split_whitespace());
    build.push(".");
    let started = std::time::Instant::now();
    docker(&build);
    eprintln!("image built in {:.0} s", started.elapsed().as_secs_f64());
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", &image]);
    eprintln!(
        "image size: {} MB",
        size.parse::<u64>().unwrap() / 1_000_000
    );

    let name = format!("neurostream-test-{}", std::process::id());
    let container = Container(name.clone());
    docker(&["run", "-d", "--name", &container.0, &image]);
    // The unprivileged uid, with a HOME and curl for `fetch`.
    assert_eq!(docker(&["exec", &name, "id", "-u"]), "10001");
    assert_eq!(
        docker(&["exec", &name, "sh", "-c", "echo $HOME"]),
        "/home/neurostream"
    );
    assert!(docker(&["exec", &name, "curl", "--version"]).starts_with("curl "));

    // /health over the container's own address (no port publishing needed).
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ]);
    let addr = format!("{ip}:{}", service_port());
    let health = poll(std::time::Duration::from_secs(120), || {
        http_get(&addr, "/health")
            .filter(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
    })
    .expect("/health never answered 200");
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    // A WebSocket client gets the hello, then a command.
    let url = format!("ws://{addr}/ws");
    let kinds = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use futures_util::StreamExt;
            let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("WebSocket connect");
            let mut kinds = Vec::new();
            let wait = tokio::time::timeout(std::time::Duration::from_secs(120), async {
                while let Some(Ok(message)) = socket.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                        let kind = v["type"].as_str().unwrap_or("").to_owned();
                        kinds.push(kind.clone());
                        if kind == "command" {
                            break;
                        }
                    }
                }
            });
            let _ = wait.await;
            kinds
        });
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("hello"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("command"),
        "{kinds:?}"
    );

    // Docker's own health check (every 10 s) turns healthy.
    let status = poll(std::time::Duration::from_secs(90), || {
        let s = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        (s == "healthy").then_some(s)
    });
    assert_eq!(status.as_deref(), Some("healthy"));

    // docker stop sends SIGTERM (STOPSIGNAL); the service exits 0 by itself, long before the
    // 30 s after which docker would SIGKILL it (exit 137).
    let stopping = std::time::Instant::now();
    docker(&["stop", "-t", "30", &name]);
    let stop_seconds = stopping.elapsed().as_secs_f64();
    let exit = docker(&[
        "inspect",
        "-f",
        "{{.State.ExitCode}} {{.State.OOMKilled}}",
        &name,
    ]);
    eprintln!("docker stop: {stop_seconds:.2} s, exit code and OOM-killed: {exit}");
    assert_eq!(exit, "0 false");
    let logs = Command::new(docker_cli())
        .args(["logs", &name])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&logs.stderr);
    assert!(
        !log.contains('\x1b'),
        "ANSI colour codes in docker logs: {log}"
    );
}
