//! An SVG line chart of the best and mean score per generation. Hand-written: two polylines,
//! axes and a few labels do not need a plotting library.

use std::fmt::Write;

use super::GenerationLog;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 48.0;

/// The chart as an SVG document; `title` goes on top.
pub fn fitness_svg(log: &[GenerationLog], title: &str) -> String {
    let values: Vec<f64> = log
        .iter()
        .flat_map(|g| [g.best, g.mean])
        .filter(|v| v.is_finite())
        .collect();
    let (mut low, mut high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    if high - low < 1e-6 {
        (low, high) = (low - 0.01, high + 0.01);
    }
    let last = (log.len().max(2) - 1) as f64;
    let x = |generation: usize| MARGIN + (WIDTH - 2.0 * MARGIN) * generation as f64 / last;
    let y = |v: f64| HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * (v - low) / (high - low);
    let line = |pick: fn(&GenerationLog) -> f64| {
        log.iter()
            .filter(|g| pick(g).is_finite())
            .map(|g| format!("{:.1},{:.1}", x(g.generation), y(pick(g))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let escaped = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="20" font-size="14">{escaped}</text>
<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="black"/>
<text x="{MARGIN}" y="{lx}" text-anchor="middle">0</text>
<text x="{r}" y="{lx}" text-anchor="middle">{last}</text>
<text x="{mid}" y="{lx}" text-anchor="middle">generation</text>
<text x="{ly}" y="{b}" text-anchor="end">{low:.3}</text>
<text x="{ly}" y="{MARGIN}" text-anchor="end">{high:.3}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{best}"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="4 3" points="{mean}"/>
<text x="{legend1}" y="{legend_y}" text-anchor="end" fill="#1f77b4">best so far</text>
<text x="{r}" y="{legend_y}" text-anchor="end" fill="#ff7f0e">generation mean</text>
</svg>
"##,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN,
        lx = HEIGHT - MARGIN + 16.0,
        ly = MARGIN - 4.0,
        mid = WIDTH / 2.0,
        // The legend sits between the title and the plot, where no line can cross it.
        legend1 = WIDTH - MARGIN - 110.0,
        legend_y = MARGIN - 10.0,
        best = line(|g| g.best),
        mean = line(|g| g.mean),
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: usize, best: f64, mean: f64) -> GenerationLog {
        GenerationLog {
            generation,
            best,
            generation_best: best,
            mean,
            evaluated: 1,
            repeated: 0,
            failed: 0,
            failure: None,
            temperature: None,
            accepted: None,
            elapsed_seconds: 0.0,
        }
    }

    #[test]
    fn best_line_rises_on_screen_as_the_score_rises() {
        let svg = fitness_svg(&[entry(0, 0.6, 0.5), entry(1, 0.8, 0.7)], "a < b");
        assert!(svg.contains("a &lt; b"));
        let best = svg
            .split("stroke=\"#1f77b4\" stroke-width=\"2\" points=\"")
            .nth(1)
            .unwrap();
        let points: Vec<(f64, f64)> = best
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(points.len(), 2);
        assert!(
            points[1].0 > points[0].0 && points[1].1 < points[0].1,
            "{points:?}"
        );
    }
}
