//! The paper's figures from a training run's logs: tr(F) of each layer's task adapter over
//! training (`fisher.csv`: step, layer, trainable, trace; Figure 3), smoothed by a moving
//! average, and the unfreezing schedule (`schedule.csv`: layer, unfreeze_step; Figure 5).
//! Each figure is written as SVG and PNG; text needs a TrueType font, taken from
//! `$TOOLKIT_FONT` or the usual system places (Debian: fonts-dejavu-core).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::fsx::write_atomic;

pub const FONT_ENV: &str = "TOOLKIT_FONT";
const FONT_FAMILY: &str = "sans-serif";
const FONT_PLACES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];
const SIZE: (u32, u32) = (960, 600);

/// Makes a TrueType font available to the plots, once per process; says why not otherwise.
pub fn load_font() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = match std::env::var_os(FONT_ENV) {
                Some(path) => PathBuf::from(path),
                None => FONT_PLACES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
                    format!("no TrueType font for the plots: install fonts-dejavu-core or set {FONT_ENV}=FILE.ttf")
                })?,
            };
            let bytes = std::fs::read(&path).map_err(|e| format!("reading font {}: {e}", path.display()))?;
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FisherRow {
    pub step: u64,
    pub layer: usize,
    #[serde(deserialize_with = "flag")]
    pub trainable: bool,
    pub trace: f64,
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(serde::de::Error::custom(format!("trainable must be true/false or 1/0, not {other:?}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScheduleRow {
    pub layer: usize,
    pub unfreeze_step: u64,
}

/// Reads a CSV of `T` rows, naming the file and line of a bad one.
pub fn read_rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{}:{}: bad row", path.display(), i + 2)))
        .collect::<Result<Vec<T>>>()?;
    ensure!(!rows.is_empty(), "{}: no rows", path.display());
    Ok(rows)
}

/// Per layer, (step, trace) points in step order, each the mean of the last `window` raw
/// points (fewer at the start).
pub fn smoothed_traces(rows: &[FisherRow], window: usize) -> BTreeMap<usize, Vec<(u64, f64)>> {
    let mut by_layer: BTreeMap<usize, Vec<(u64, f64)>> = BTreeMap::new();
    for row in rows {
        by_layer.entry(row.layer).or_default().push((row.step, row.trace));
    }
    for points in by_layer.values_mut() {
        points.sort_by_key(|p| p.0);
        let raw: Vec<f64> = points.iter().map(|p| p.1).collect();
        for (i, point) in points.iter_mut().enumerate() {
            let from = (i + 1).saturating_sub(window.max(1));
            point.1 = raw[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64;
        }
    }
    by_layer
}

fn layer_color(layer: usize, layers: usize) -> RGBColor {
    let HSLColor(h, s, l) = HSLColor(layer as f64 / layers.max(1) as f64 * 0.85, 0.75, 0.45);
    let rgb = HSLColor(h, s, l).to_backend_color().rgb;
    RGBColor(rgb.0, rgb.1, rgb.2)
}

fn plot_error<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing the plot: {err:?}")
}

/// Figure 3: smoothed tr(F) per layer over training steps (log scale when all are positive).
fn draw_fisher<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    title: &str,
    traces: &BTreeMap<usize, Vec<(u64, f64)>>,
) -> Result<()> {
    area.fill(&WHITE).map_err(plot_error)?;
    let points = || traces.values().flatten();
    let max_step = points().map(|p| p.0).max().unwrap_or(1).max(1);
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let mut chart = ChartBuilder::on(&area);
    chart.caption(title, (FONT_FAMILY, 22)).margin(12).x_label_area_size(40).y_label_area_size(70);
    let layers = traces.keys().max().map_or(1, |m| m + 1);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("training step")
                .y_desc("tr(F)")
                .y_label_formatter(&|v: &f64| format!("{v:.1e}"))
                .label_style((FONT_FAMILY, 14))
                .draw()
                .map_err(plot_error)?;
            for (&layer, series) in traces {
                let color = layer_color(layer, layers);
                chart
                    .draw_series(LineSeries::new(series.iter().map(|&(s, t)| (s, t)), color.stroke_width(2)))
                    .map_err(plot_error)?
                    .label(format!("layer {layer}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT_FAMILY, 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(plot_error)?;
        }};
    }
    if lo > 0.0 {
        finish!(chart.build_cartesian_2d(0..max_step, (lo * 0.8..hi * 1.25).log_scale()).map_err(plot_error)?);
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-12);
        finish!(chart.build_cartesian_2d(0..max_step, lo - pad..hi + pad).map_err(plot_error)?);
    }
    area.present().map_err(plot_error)
}

/// Figure 5: for each run, when each layer's task adapter starts training.
fn draw_schedules<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, runs: &[(String, Vec<ScheduleRow>)]) -> Result<()> {
    area.fill(&WHITE).map_err(plot_error)?;
    let end = runs.iter().flat_map(|(_, rows)| rows.iter().map(|r| r.unfreeze_step)).max().unwrap_or(0);
    let end = (end + end / 10).max(1);
    for ((name, rows), panel) in runs.iter().zip(area.split_evenly((runs.len(), 1))) {
        let layers = rows.iter().map(|r| r.layer).max().map_or(1, |m| m + 1);
        let mut chart = ChartBuilder::on(&panel)
            .caption(name, (FONT_FAMILY, 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0..end, -0.5..(layers as f64 - 0.5))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("training step")
            .y_desc("layer")
            .y_labels(layers)
            .y_label_formatter(&|y| format!("{}", y.round() as i64))
            .label_style((FONT_FAMILY, 13))
            .draw()
            .map_err(plot_error)?;
        for row in rows {
            let color = layer_color(row.layer, layers);
            let y = row.layer as f64;
            chart
                .draw_series(LineSeries::new([(row.unfreeze_step, y), (end, y)], color.stroke_width(6)))
                .map_err(plot_error)?;
            chart.draw_series([Circle::new((row.unfreeze_step, y), 5, color.filled())]).map_err(plot_error)?;
        }
    }
    area.present().map_err(plot_error)
}

/// Writes `stem`.svg and `stem`.png of the figure `$draw` makes on the drawing area `$area`
/// (a macro, since the drawing functions are generic over the backend).
macro_rules! render {
    ($stem:expr, $area:ident => $draw:expr) => {{
        let stem: &Path = $stem;
        let mut svg = String::new();
        {
            let $area = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            $draw?;
        }
        write_atomic(&stem.with_extension("svg"), svg.as_bytes())?;
        let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let $area = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
            $draw?;
        }
        write_atomic(&stem.with_extension("png"), &encode_png(&pixels, SIZE)?)?;
    }};
}

/// `dir`/fisher-`run`.{svg,png} from a run's `fisher.csv`.
pub fn fisher_figure(fisher_csv: &Path, run: &str, window: usize, dir: &Path) -> Result<PathBuf> {
    let traces = smoothed_traces(&read_rows::<FisherRow>(fisher_csv)?, window);
    let title = format!("{run}: tr(F) of each task adapter (moving average of {window})");
    let stem = dir.join(format!("fisher-{run}"));
    render!(&stem, area => draw_fisher(area, &title, &traces));
    Ok(stem)
}

/// `dir`/schedules.{svg,png} from runs' `schedule.csv`, one panel per run.
pub fn schedule_figure(runs: &[(String, PathBuf)], dir: &Path) -> Result<PathBuf> {
    let runs: Vec<(String, Vec<ScheduleRow>)> =
        runs.iter().map(|(name, path)| Ok((name.clone(), read_rows::<ScheduleRow>(path)?))).collect::<Result<_>>()?;
    let stem = dir.join("schedules");
    render!(&stem, area => draw_schedules(area, &runs));
    Ok(stem)
}

fn encode_png(rgb: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(rgb).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(out)
}
