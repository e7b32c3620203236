//! The shipped binary as a user runs it: `neurostream demo` serving, the Python device-side
//! example (`examples/listen.py`) driving it with a token and feedback, and Ctrl-C stopping
//! the service cleanly. Timeouts only keep a broken test from hanging.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python_websockets() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let message = "python3 with websockets not found (pip install websockets)";
        if std::env::var("NEUROSTREAM_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn python_example_drives_the_demo_and_ctrl_c_stops_it() {
    if !python_websockets() {
        return;
    }
    let port = free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args([
            "demo",
            "--simulator",
            "--speed",
            "4",
            "--calibration-seconds",
            "60",
        ])
        .args(["--bind", &format!("127.0.0.1:{port}"), "--token", "s3cret"])
        // The example confirms commands: feedback must be allowed (the token grants it).
        .arg("--allow-feedback")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut demo_log = BufReader::new(demo.stderr.take().unwrap());
    let mut line = String::new();
    let started = Instant::now();
    while !line.contains("serving ws://") {
        line.clear();
        assert!(
            demo_log.read_line(&mut line).unwrap() > 0,
            "demo ended early"
        );
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/listen.py");
    let mut listener = Command::new("python3")
        .arg(example)
        .arg(format!("ws://127.0.0.1:{port}/ws"))
        .args(["--token", "s3cret", "--feedback"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Commands arrive as JSON lines on stdout; the `learned` answers to the example's
    // feedback on stderr.
    let mut commands = BufReader::new(listener.stdout.take().unwrap());
    let mut command = String::new();
    commands.read_line(&mut command).unwrap();
    let command: serde_json::Value = serde_json::from_str(&command).unwrap();
    assert_eq!(command["type"], "command", "{command}");
    let mut answers = BufReader::new(listener.stderr.take().unwrap());
    let mut learned = false;
    let mut answer = String::new();
    while answers.read_line(&mut answer).unwrap() > 0 {
        if answer.contains("\"learned\"") {
            learned = true;
            break;
        }
        answer.clear();
    }
    assert!(learned, "no learned answer to the example's feedback");

    // Ctrl-C: the service says goodbye to its clients and exits successfully.
    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut demo_log, &mut rest);
    let exit = demo.wait().unwrap();
    assert!(exit.success(), "demo exited with {exit}: {rest}");
    assert!(rest.contains("Ctrl-C: shutting down"), "{rest}");
    assert!(rest.contains("service stopped"), "{rest}");
    // The example sees the connection close and ends by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = listener.try_wait().unwrap() {
            assert!(status.success(), "listen.py exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listen.py did not end after the service stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
