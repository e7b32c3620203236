//! Joins `neurostream evaluate --online --json` outputs run on disjoint groups of subjects (e.g.
//! chunks run side by side) and prints the per-subject table, the means and the paired tests of
//! `evaluate --online` over all of them, computed by the same code
//! ([`neurostream::evaluate::compare_arms`]):
//!
//! ```sh
//! cargo run --release --example online_tests -- a.json b.json c.json
//! ```
//!
//! A trailing line that is not JSON (e.g. an exit code appended by a script) is ignored.

use neurostream::evaluate::{compare_arms, ArmScore};
use serde_json::Value;

fn score(report: &Value) -> Option<ArmScore> {
    Some(ArmScore {
        accuracy: report["accuracy"].as_f64()?,
        auc: report["auc"].as_f64(),
    })
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: online_tests FILE.json...");
        std::process::exit(2);
    }
    let mut subjects: Vec<(String, [ArmScore; 3], String)> = Vec::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: {e}");
                std::process::exit(1);
            }
        };
        // Up to the last closing brace: anything after it is not part of the JSON.
        let end = text.rfind('}').map_or(0, |i| i + 1);
        let json: Value = match serde_json::from_str(&text[..end]) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("{file}: not an `evaluate --online --json` output: {e}");
                std::process::exit(1);
            }
        };
        for result in json["results"].as_array().into_iter().flatten() {
            for s in result["subjects"].as_array().into_iter().flatten() {
                let name = s["subject"].as_str().unwrap_or("?").to_owned();
                let o = &s["online"];
                let arms = [&o["frozen"], &o["unsupervised"], &o["adaptive"]].map(score);
                let [Some(a), Some(b), Some(c)] = arms else {
                    eprintln!("{file}: subject {name} has no online scores");
                    std::process::exit(1);
                };
                let extra = format!(
                    "{} calibration / {} online trials; {} updates",
                    o["calibration_trials"], o["online_trials"], o["updates_applied"]
                );
                subjects.push((name, [a, b, c], extra));
            }
        }
    }
    subjects.sort_by(|a, b| a.0.cmp(&b.0));
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.3}"));
    println!("{} subjects from {} file(s)", subjects.len(), files.len());
    println!("                    frozen    unsupervised       unsup+sup  notes");
    println!("  subject      acc     auc     acc     auc     acc     auc");
    for (name, arms, extra) in &subjects {
        println!(
            "  {:<8} {:>7.3} {:>7} {:>7.3} {:>7} {:>7.3} {:>7}  {}",
            name,
            arms[0].accuracy,
            fmt(arms[0].auc),
            arms[1].accuracy,
            fmt(arms[1].auc),
            arms[2].accuracy,
            fmt(arms[2].auc),
            extra
        );
    }
    let n = subjects.len().max(1) as f64;
    let column = |i: usize| -> Vec<ArmScore> { subjects.iter().map(|s| s.1[i]).collect() };
    let (frozen, unsup, both) = (column(0), column(1), column(2));
    let mean = |a: &[ArmScore]| {
        let acc = a.iter().map(|x| x.accuracy).sum::<f64>() / n;
        let auc: Option<f64> = a.iter().map(|x| x.auc).sum::<Option<f64>>().map(|s| s / n);
        (acc, auc)
    };
    let means = [mean(&frozen), mean(&unsup), mean(&both)];
    println!(
        "  {:<8} {:>7.3} {:>7} {:>7.3} {:>7} {:>7.3} {:>7}",
        "mean",
        means[0].0,
        fmt(means[0].1),
        means[1].0,
        fmt(means[1].1),
        means[2].0,
        fmt(means[2].1)
    );
    println!("  paired tests over subjects (two-sided; better/worse/tied subjects):");
    let tests = compare_arms([
        ("frozen", &frozen),
        ("unsupervised", &unsup),
        ("unsupervised+supervised", &both),
    ]);
    for row in tests.iter().flat_map(|t| t.rows()) {
        println!("{row}");
    }
}
