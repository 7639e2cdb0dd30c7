//! The one place this crate draws: line charts as SVG (the loss curve beside a trained model, accuracy per
//! round, accuracy per selection method). Callers compute the points; this module only draws them.

use std::ops::Range;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// One line: its name in the legend, its points, and the radius of a dot on each point (none: a bare line).
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dots: Option<u32>,
}

/// The axes: their ranges and descriptions, and how many x ticks with which labels when the x axis counts
/// things (rounds, methods) rather than measuring.
pub struct Axes<'a> {
    pub x: Range<f64>,
    pub y: Range<f64>,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub x_ticks: Option<(usize, &'a dyn Fn(&f64) -> String)>,
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A 760 × 420 SVG of `lines` on `axes`, with a legend.
pub fn lines(title: &str, axes: &Axes, lines: &[Line]) -> Result<String> {
    let mut svg = String::new();
    let failed = |e: &dyn std::fmt::Debug| Error::Invalid(format!("drawing the chart {title:?}: {e:?}"));
    {
        let root = SVGBackend::with_string(&mut svg, (760, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(axes.x.clone(), axes.y.clone())
            .map_err(|e| failed(&e))?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(axes.x_desc).y_desc(axes.y_desc);
        if let Some((count, label)) = axes.x_ticks {
            mesh.x_labels(count).x_label_formatter(label);
        }
        mesh.draw().map_err(|e| failed(&e))?;
        for (i, line) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(line.points.clone(), colour.stroke_width(2)))
                .map_err(|e| failed(&e))?
                .label(line.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            if let Some(radius) = line.dots {
                chart
                    .draw_series(line.points.iter().map(|&p| Circle::new(p, radius, colour.filled())))
                    .map_err(|e| failed(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}
