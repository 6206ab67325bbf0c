//! The forwarding plot: received rate per receiver against fan-out, one panel per frame size,
//! mgm against the kernel with the raw redirect and the XDP_DROP ceiling for scale.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};
use serde_json::Value;

use super::{router::Forwarder, FRAME_SIZES};

/// The lines drawn, with their colours.
const SERIES: [(Forwarder, RGBColor); 4] = [
    (Forwarder::Mgm, RGBColor(0x1f, 0x77, 0xb4)),
    (Forwarder::Kernel, RGBColor(0xd6, 0x27, 0x28)),
    (Forwarder::Raw, RGBColor(0x2c, 0xa0, 0x2c)),
    (Forwarder::RawMac, RGBColor(0x94, 0x67, 0xbd)),
];

/// Draws `summary` (medians from [`super::summarize`]) into `png`, with text in the TrueType
/// font at `font`.
///
/// # Errors
/// The font cannot be read or the PNG cannot be written.
pub fn plot(summary: &[Value], png: &Path, font: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("read font {font}"))?;
    // plotters keeps registered fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{font} is not a usable font"))?;
    let root = BitMapBackend::new(png, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((1, FRAME_SIZES.len()));
    for (area, size) in panels.iter().zip(FRAME_SIZES) {
        panel(area, summary, size as u64)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

fn rate(s: &Value, key: &str) -> f64 {
    s[key].as_f64().unwrap_or(0.0) / 1e6
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    summary: &[Value],
    size: u64,
) -> anyhow::Result<()> {
    let of_size: Vec<&Value> = summary
        .iter()
        .filter(|s| s["frame_bytes"].as_u64() == Some(size))
        .collect();
    let ceiling = of_size
        .iter()
        .find(|s| s["forwarder"] == Forwarder::Drop.name())
        .map(|s| rate(s, "ingress_pps"));
    let max_fanout = of_size
        .iter()
        .filter_map(|s| s["fanout"].as_u64())
        .max()
        .unwrap_or(8) as f64;
    let rates = || {
        of_size
            .iter()
            .map(|s| rate(s, "per_receiver_pps"))
            .chain(ceiling)
            .filter(|r| *r > 0.0)
    };
    // Logarithmic: the kernel at fan-out 8 is tens of times below the ceiling.
    let top = rates().fold(0.0f64, f64::max).max(0.001) * 1.5;
    let bottom = rates().fold(f64::INFINITY, f64::min).min(top / 2.0) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{size}-byte frames: received per receiver (log scale)"),
            ("sans-serif", 22),
        )
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
    for (fw, colour) in SERIES {
        let points: Vec<(f64, f64)> = of_size
            .iter()
            .filter(|s| s["forwarder"] == fw.name())
            .filter_map(|s| Some((s["fanout"].as_u64()? as f64, rate(s, "per_receiver_pps"))))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))
            .map_err(draw_error)?
            .label(fw.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 5, colour.filled())),
            )
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
