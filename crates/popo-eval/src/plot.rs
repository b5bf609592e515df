//! Metric curves as SVG and PNG (plotters).
//!
//! Text needs a font. Instead of linking fontconfig, a TrueType file is looked up at run time
//! (`POPO_FONT`, then the usual system locations) and registered with plotters' ab_glyph
//! renderer. Without any font the charts are still drawn, without text, and a warning says so.

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use popo_train::metrics::{read_metrics, series};

/// One curve, with an optional band (`x, low, high`), e.g. mean +- std over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64, f64)>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The curves `popo plot` draws when `--metrics` is not given (those present in the runs).
pub const DEFAULT_METRICS: &[&str] = &[
    "train/reward_mean",
    "train/positive_ratio",
    "eval/accuracy",
    "loss/total",
    "train/entropy",
    "train/response_len_mean",
    "popo/ess",
    "popo/sim_cos",
    "probe/delta_neg",
    "probe/delta_pos",
    "perf/rollout_tokens_per_s",
];

const FONT_FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 560);

/// Whether a font was found and registered (looked up once per process).
pub fn font_available() -> bool {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        for path in font_candidates() {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the whole process: leaking one file once is intended.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok() {
                tracing::debug!("plot font: {}", path.display());
                return Some(path);
            }
        }
        tracing::warn!(
            "no TrueType font found (set POPO_FONT=/path/to/font.ttf); plots are drawn without text"
        );
        None
    });
    found.is_some()
}

fn font_candidates() -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("POPO_FONT") {
        c.push(p.into());
    }
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ] {
        c.push(p.into());
    }
    // Any other TrueType font in the usual directories, in a stable order.
    let mut found = Vec::new();
    for dir in ["/usr/share/fonts", "/usr/local/share/fonts"] {
        collect_ttf(Path::new(dir), 4, &mut found);
    }
    found.sort();
    c.extend(found);
    c
}

fn collect_ttf(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth > 0 {
            collect_ttf(&p, depth - 1, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn bounds(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut see = |x: f64, y: f64| {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    };
    for s in &chart.series {
        for &(x, y) in &s.points {
            see(x, y);
        }
        for &(x, lo, hi) in s.band.iter().flatten() {
            see(x, lo);
            see(x, hi);
        }
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = if y1 - y0 < 1e-12 {
        y0.abs().max(1.0) * 0.05
    } else {
        (y1 - y0) * 0.05
    };
    ((x0, x1), (y0 - pad, y1 + pad))
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart, text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing failed: {err:?}");
    root.fill(&WHITE).map_err(e)?;
    let ((x0, x1), (y0, y1)) = bounds(chart);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(&chart.title, (FONT_FAMILY, 22))
            .x_label_area_size(44)
            .y_label_area_size(72);
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
    let mut mesh = ctx.configure_mesh();
    if text {
        mesh.x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .label_style((FONT_FAMILY, 14))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(e)?;

    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if let Some(band) = &s.band {
            let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, _, hi)| (x, hi)).collect();
            poly.extend(band.iter().rev().map(|&(x, lo, _)| (x, lo)));
            ctx.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))
            .map_err(e)?;
        }
        let line = ctx
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?;
        if text {
            line.label(s.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        if s.points.len() == 1 {
            ctx.draw_series(std::iter::once(Circle::new(s.points[0], 3, color.filled())))
                .map_err(e)?;
        }
    }
    if text && chart.series.iter().any(|s| !s.label.is_empty()) {
        ctx.configure_series_labels()
            .label_font((FONT_FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `<stem>.svg` and `<stem>.png`; returns both paths.
pub fn draw(chart: &Chart, stem: &Path) -> Result<Vec<PathBuf>> {
    let text = font_available();
    if let Some(dir) = stem.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    render(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart, text)
        .with_context(|| format!("writing {}", svg.display()))?;
    render(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        chart,
        text,
    )
    .with_context(|| format!("writing {}", png.display()))?;
    Ok(vec![svg, png])
}

/// A file-name-safe version of a metric name: `train/reward_mean` -> `train_reward_mean`.
pub fn file_stem(metric: &str) -> String {
    metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Labels for runs: their directory names, or whole paths where names collide.
fn run_labels(runs: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            r.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.display().to_string())
        })
        .collect();
    names
        .iter()
        .zip(runs)
        .map(|(n, r)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                r.display().to_string()
            } else {
                n.clone()
            }
        })
        .collect()
}

/// `popo plot`: one chart per metric, one curve per run. `metrics` empty: the
/// [`DEFAULT_METRICS`] present in the runs (or every metric if none of those is).
/// Returns the files written.
pub fn plot_runs(runs: &[PathBuf], metrics: &[String], out_dir: &Path) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(!runs.is_empty(), "no run directory given");
    let records = runs
        .iter()
        .map(|r| read_metrics(r))
        .collect::<Result<Vec<_>>>()?;
    let present: std::collections::BTreeSet<String> = records
        .iter()
        .flat_map(|r| popo_train::metrics::metric_names(r))
        .collect();
    let wanted: Vec<String> = if !metrics.is_empty() {
        for m in metrics {
            if !present.contains(m) {
                tracing::warn!("metric `{m}` is in none of the runs");
            }
        }
        metrics.to_vec()
    } else {
        let d: Vec<String> = DEFAULT_METRICS
            .iter()
            .filter(|m| present.contains(**m))
            .map(|m| m.to_string())
            .collect();
        if d.is_empty() {
            present.iter().cloned().collect()
        } else {
            d
        }
    };
    let labels = run_labels(runs);
    let mut written = Vec::new();
    for m in &wanted {
        let series_list: Vec<Series> = records
            .iter()
            .zip(&labels)
            .map(|(rec, label)| Series {
                label: label.clone(),
                points: series(rec, m)
                    .into_iter()
                    .map(|(s, v)| (s as f64, v))
                    .collect(),
                band: None,
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series_list.is_empty() {
            continue;
        }
        let chart = Chart {
            title: m.clone(),
            x_label: "step".into(),
            y_label: m.clone(),
            series: series_list,
        };
        written.extend(draw(&chart, &out_dir.join(file_stem(m)))?);
    }
    anyhow::ensure!(
        !written.is_empty(),
        "none of the requested metrics has a finite value in the runs"
    );
    Ok(written)
}

/// Mean +- standard deviation over several runs (seeds) at the steps they all share.
pub fn band_series(label: &str, runs: &[Vec<(u64, f64)>]) -> Series {
    let mut steps: Vec<u64> = runs
        .first()
        .map(|r| r.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    steps.retain(|s| runs.iter().all(|r| r.iter().any(|p| p.0 == *s)));
    let mut points = Vec::new();
    let mut band = Vec::new();
    for s in steps {
        let vals: Vec<f64> = runs
            .iter()
            .map(|r| r.iter().find(|p| p.0 == s).unwrap().1)
            .collect();
        let (mean, std) = mean_std(&vals);
        points.push((s as f64, mean));
        band.push((s as f64, mean - std, mean + std));
    }
    Series {
        label: label.to_string(),
        points,
        band: if runs.len() > 1 { Some(band) } else { None },
    }
}

/// Mean and sample standard deviation (n - 1; 0 for a single value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use popo_train::metrics::{names, RunLogger, StepMetrics};

    fn fake_run(dir: &Path, slope: f64) {
        let mut log = RunLogger::create(dir, false).unwrap();
        for step in 1..=20u64 {
            let mut m = StepMetrics::new(step);
            m.set(names::REWARD_MEAN, (slope * step as f64).min(1.0));
            if step % 5 == 0 {
                m.set(names::EVAL_ACCURACY, slope * step as f64 * 0.8);
            }
            log.log(&m).unwrap();
        }
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        (
            u32::from_be_bytes(b[16..20].try_into().unwrap()),
            u32::from_be_bytes(b[20..24].try_into().unwrap()),
        )
    }

    #[test]
    fn plots_runs_to_svg_and_png() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("popo"), tmp.path().join("grpo"));
        fake_run(&a, 0.05);
        fake_run(&b, 0.03);
        let out = tmp.path().join("plots");
        let files = plot_runs(&[a, b], &[], &out).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "train_reward_mean.svg",
                "train_reward_mean.png",
                "eval_accuracy.svg",
                "eval_accuracy.png"
            ]
        );
        let svg = std::fs::read_to_string(out.join("train_reward_mean.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        // Two runs: a 20-point curve in each of the first two colours.
        for color in ["#1F77B4", "#FF7F0E"] {
            let curve = svg.lines().find(|l| {
                l.starts_with("<polyline")
                    && l.contains(&format!("stroke=\"{color}\""))
                    && l.split("points=\"")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .count()
                        == 21
            });
            assert!(curve.is_some(), "no 20-point curve in {color}");
        }
        if font_available() {
            assert!(svg.contains("\ngrpo\n") && svg.contains("\npopo\n"));
        }
        assert_eq!(png_size(&out.join("eval_accuracy.png")), SIZE);

        let err = plot_runs(&[tmp.path().join("popo")], &["nope".into()], &out).unwrap_err();
        assert!(format!("{err:#}").contains("none of the requested metrics"));
        let err = plot_runs(&[tmp.path().join("missing")], &[], &out).unwrap_err();
        assert!(format!("{err:#}").contains("missing"));
    }

    #[test]
    fn text_free_rendering_works_without_fonts() {
        let tmp = tempfile::tempdir().unwrap();
        let chart = Chart {
            title: "t".into(),
            x_label: "step".into(),
            y_label: "y".into(),
            series: vec![band_series(
                "x",
                &[vec![(0, 0.0), (1, 1.0)], vec![(0, 0.2), (1, 0.6)]],
            )],
        };
        let png = tmp.path().join("a.png");
        render(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            &chart,
            false,
        )
        .unwrap();
        assert_eq!(png_size(&png), SIZE);
    }

    #[test]
    fn band_is_mean_plus_minus_sample_std_on_shared_steps() {
        let s = band_series(
            "popo",
            &[
                vec![(0, 1.0), (10, 2.0), (20, 5.0)],
                vec![(0, 3.0), (10, 4.0)],
            ],
        );
        assert_eq!(s.points, vec![(0.0, 2.0), (10.0, 3.0)]);
        let sd = 2f64.sqrt(); // values 1 and 3: sample variance 2
        assert_eq!(
            s.band.unwrap(),
            vec![(0.0, 2.0 - sd, 2.0 + sd), (10.0, 3.0 - sd, 3.0 + sd)]
        );
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
        assert_eq!(file_stem("probe/delta_neg"), "probe_delta_neg");
    }
}
