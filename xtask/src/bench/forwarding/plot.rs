//! The forwarding plot, one column per frame size, against fan-out: on top the received rate
//! per receiver (mgm against its baselines, and the XDP_DROP ceiling for
//! scale); below, what one router CPU forwards by turns with the receivers' share taken out
//! (receivers counting in XDP), the comparison that holds when the generator cannot saturate
//! the router.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};
use serde_json::Value;

use super::{receive::Counter, router::Forwarder, FRAME_SIZES};

/// The lines drawn, with their colours.
/// (ipmr's has no points on a kernel without it, and is left out.)
const SERIES: [(Forwarder, RGBColor); 6] = [
    (Forwarder::Mgm, RGBColor(0x1f, 0x77, 0xb4)),
    (Forwarder::Kernel, RGBColor(0xd6, 0x27, 0x28)),
    (Forwarder::Bridge, RGBColor(0xff, 0x7f, 0x0e)),
    (Forwarder::Tc, RGBColor(0x8c, 0x56, 0x4b)),
    (Forwarder::Raw, RGBColor(0x2c, 0xa0, 0x2c)),
    (Forwarder::RawMac, RGBColor(0x94, 0x67, 0xbd)),
];

/// One forwarder's line: its colour and its points (fan-out, Mpps).
type Line = (Forwarder, RGBColor, Vec<(f64, f64)>);

/// Draws `summary` (medians from [`super::summarize`]) and `by_turns` (from
/// [`super::turns`]) into `png`, with text in the TrueType font at `font`.
///
/// # Errors
/// The font cannot be read or the PNG cannot be written.
pub fn plot(summary: &[Value], by_turns: &[Value], png: &Path, font: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("read font {font}"))?;
    // plotters keeps registered fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{font} is not a usable font"))?;
    let root = BitMapBackend::new(png, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((2, FRAME_SIZES.len()));
    let (rates, capacities) = panels.split_at(FRAME_SIZES.len());
    for ((top, bottom), size) in rates.iter().zip(capacities).zip(FRAME_SIZES) {
        let size = size as u64;
        let measured = of_size(summary, size);
        let ceiling = measured
            .iter()
            .find(|s| s["forwarder"] == Forwarder::Drop.name())
            .map(|s| mpps(&s["ingress_pps"]));
        let rate_lines = lines(&measured, |s, fw| {
            (s["forwarder"] == fw.name()).then(|| mpps(&s["per_receiver_pps"]))
        });
        panel(
            top,
            &format!("{size}-byte frames: received per receiver (log scale)"),
            &rate_lines,
            ceiling,
        )?;
        let turns: Vec<&Value> = of_size(by_turns, size)
            .into_iter()
            .filter(|t| t["receivers_count_in"] == Counter::Xdp.name())
            .collect();
        if turns.is_empty() {
            // Where the router could not be fed directly (no live-frames test runs).
            bottom
                .titled(
                    &format!("{size}-byte: router CPU capacity, by turns: not measured"),
                    ("sans-serif", 22),
                )
                .map_err(draw_error)?;
            continue;
        }
        let capacity_lines = lines(&turns, |t, fw| {
            let ns = t[format!("{}_router_ns_per_packet", fw.name())].as_f64()?;
            Some(1e3 / ns)
        });
        panel(
            bottom,
            &format!("{size}-byte: router CPU capacity, by turns (log scale)"),
            &capacity_lines,
            None,
        )?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// The rows of one frame size.
fn of_size(rows: &[Value], size: u64) -> Vec<&Value> {
    rows.iter()
        .filter(|s| s["frame_bytes"].as_u64() == Some(size))
        .collect()
}

/// Packets per second to Mpps.
fn mpps(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1e6
}

/// Each forwarder's points (fan-out, Mpps), where `y` gives a value for a row.
fn lines(rows: &[&Value], y: impl Fn(&Value, Forwarder) -> Option<f64>) -> Vec<Line> {
    SERIES
        .iter()
        .map(|&(fw, colour)| {
            let points = rows
                .iter()
                .filter_map(|r| Some((r["fanout"].as_u64()? as f64, y(r, fw)?)))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            (fw, colour, points)
        })
        .filter(|(_, _, points): &Line| !points.is_empty())
        .collect()
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    series: &[Line],
    ceiling: Option<f64>,
) -> anyhow::Result<()> {
    let values = || {
        series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|(_, v)| *v))
            .chain(ceiling)
            .filter(|v| *v > 0.0)
    };
    let max_fanout = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0f64, f64::max);
    // Logarithmic: the kernel at fan-out 8 is tens of times below the ceiling.
    let top = values().fold(0.0f64, f64::max).max(0.001) * 1.5;
    let bottom = values().fold(f64::INFINITY, f64::min).min(top / 2.0) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5f64..max_fanout + 0.5, (bottom..top).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("fan-out (receivers)")
        .y_desc("Mpps")
        .y_label_formatter(&|y| format!("{y:.3}"))
        .x_labels(max_fanout as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(draw_error)?;
    for (fw, colour, points) in series {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))
            .map_err(draw_error)?
            .label(fw.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 5, colour.filled())))
            .map_err(draw_error)?;
    }
    if let Some(c) = ceiling {
        let grey = RGBColor(0x70, 0x70, 0x70);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.5, c), (max_fanout + 0.5, c)],
                8,
                6,
                grey.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label("xdp_drop ceiling (ingress)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}
