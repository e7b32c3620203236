//! Sinks for per-window features: CSV (one header row, one row per window) or JSON lines (one
//! object per window, plus one per event). Written through a buffer straight from the borrowed
//! feature slice, so writing does not allocate per window.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::engine::EngineSink;
use crate::error::{Error, Result};
use crate::pipeline::WindowFeatures;
use crate::stream::Event;

pub use crate::config::output::{OutputConfig, OutputFormat};

/// Writes features as CSV or JSON lines to any writer.
pub struct FeatureWriter {
    out: Box<dyn Write + Send>,
    origin: PathBuf,
    format: OutputFormat,
    names: Vec<String>,
    classes: Vec<String>,
    header_written: bool,
    flush_each_window: bool,
}

impl FeatureWriter {
    pub fn new(
        out: Box<dyn Write + Send>,
        origin: impl Into<PathBuf>,
        format: OutputFormat,
        names: Vec<String>,
    ) -> Self {
        FeatureWriter {
            out,
            origin: origin.into(),
            format,
            names,
            classes: Vec::new(),
            header_written: false,
            flush_each_window: false,
        }
    }

    /// Also write class probabilities and the most probable class (pipelines with a model).
    pub fn with_classes(mut self, classes: Vec<String>) -> Self {
        self.classes = classes;
        self
    }

    /// Flush after every window: for live output a person watches (the demo), not for files.
    pub fn line_buffered(mut self) -> Self {
        self.flush_each_window = true;
        self
    }

    /// A file (created or truncated) or, for `None`, standard output.
    pub fn open(path: Option<&Path>, format: OutputFormat, names: Vec<String>) -> Result<Self> {
        match path {
            Some(path) => {
                let file = File::create(path).map_err(|e| Error::io(path, e))?;
                Ok(Self::new(
                    Box::new(BufWriter::new(file)),
                    path,
                    format,
                    names,
                ))
            }
            None => Ok(Self::new(
                Box::new(BufWriter::new(std::io::stdout())),
                "<stdout>",
                format,
                names,
            )),
        }
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.origin, e)
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        if self.format == OutputFormat::Csv {
            write!(self.out, "timestamp,marker")?;
            if !self.classes.is_empty() {
                write!(self.out, ",predicted")?;
                for class in &self.classes {
                    write!(self.out, ",p:{class}")?;
                }
            }
            for name in &self.names {
                write!(self.out, ",{name}")?;
            }
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn write_window(
        &mut self,
        features: WindowFeatures<'_>,
        marker: Option<&str>,
    ) -> std::io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.write_header()?;
        }
        match self.format {
            OutputFormat::Csv => {
                write!(
                    self.out,
                    "{:.6},{}",
                    features.end_timestamp,
                    marker.unwrap_or("")
                )?;
                if let Some(p) = features.probabilities {
                    write!(self.out, ",{}", self.classes[argmax(p)])?;
                    for v in p {
                        write!(self.out, ",{v:.6}")?;
                    }
                }
                for v in features.values {
                    write!(self.out, ",{v}")?;
                }
                writeln!(self.out)
            }
            OutputFormat::Jsonl => {
                write!(
                    self.out,
                    "{{\"type\":\"features\",\"t\":{:.6},\"marker\":",
                    features.end_timestamp
                )?;
                match marker {
                    Some(m) => write!(self.out, "{}", serde_json::Value::from(m))?,
                    None => write!(self.out, "null")?,
                }
                if let Some(p) = features.probabilities {
                    write!(
                        self.out,
                        ",\"predicted\":{},\"probabilities\":{{",
                        serde_json::Value::from(self.classes[argmax(p)].as_str())
                    )?;
                    for (i, (class, v)) in self.classes.iter().zip(p).enumerate() {
                        let sep = if i == 0 { "" } else { "," };
                        write!(
                            self.out,
                            "{sep}{}:{v:.6}",
                            serde_json::Value::from(class.as_str())
                        )?;
                    }
                    write!(self.out, "}}")?;
                }
                write!(self.out, ",\"features\":{{")?;
                for (i, (name, v)) in self.names.iter().zip(features.values).enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    // Non-finite values are not JSON numbers; null keeps the line parseable.
                    if v.is_finite() {
                        write!(self.out, "{sep}\"{name}\":{v}")?;
                    } else {
                        write!(self.out, "{sep}\"{name}\":null")?;
                    }
                }
                writeln!(self.out, "}}}}")
            }
        }
    }
}

/// Index of the largest value (the first on ties).
fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

impl EngineSink for FeatureWriter {
    fn window(&mut self, features: WindowFeatures<'_>, marker: Option<&str>) -> Result<()> {
        self.write_window(features, marker)
            .map_err(|e| self.io(e))?;
        if self.flush_each_window {
            self.out.flush().map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn events(&mut self, events: &[Event]) -> Result<()> {
        if self.format == OutputFormat::Jsonl {
            for event in events {
                let line = serde_json::json!({"type": "event", "label": event.label, "onset": event.onset, "duration": event.duration});
                writeln!(self.out, "{line}").map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.write_header().map_err(|e| self.io(e))?;
        }
        self.out.flush().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn written(format: OutputFormat) -> String {
        let buffer = Shared::default();
        let mut writer = FeatureWriter::new(
            Box::new(buffer.clone()),
            "mem",
            format,
            vec!["C3:mu".into(), "C3:beta".into()],
        );
        writer.events(&[Event::new("T1", 0.5, 4.1)]).unwrap();
        let values = [1.5f32, f32::NAN];
        writer
            .window(
                WindowFeatures {
                    end_timestamp: 1.0,
                    values: &values,
                    probabilities: None,
                },
                Some("T1"),
            )
            .unwrap();
        writer.finish().unwrap();
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn csv_has_header_and_rows() {
        assert_eq!(
            written(OutputFormat::Csv),
            "timestamp,marker,C3:mu,C3:beta\n1.000000,T1,1.5,NaN\n"
        );
    }

    #[test]
    fn jsonl_lines_parse() {
        let text = written(OutputFormat::Jsonl);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "event");
        assert_eq!(lines[1]["features"]["C3:mu"], 1.5);
        assert!(lines[1]["features"]["C3:beta"].is_null());
        assert_eq!(lines[1]["marker"], "T1");
    }
}
