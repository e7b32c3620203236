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
    let server = read("src/service/server.rs");
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
            format!("0.0.0.0:{port}")
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
