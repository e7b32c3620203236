//! One module per subcommand: its arguments and what it does.

pub mod check;
pub mod demo;
pub mod evaluate;
pub mod info;
pub mod replay;
pub mod simulate;
pub mod train;

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
