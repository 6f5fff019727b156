//! SVG chart of package size and BTF cost across packages.
//!
//! Two stacked panels over the packages in order: the package file in MiB on top, the BTF cost
//! (vmlinuz and module shares stacked) in KiB below with the budget as a dashed line. Text is
//! laid out with plotters' naive width estimate (no font files are read), so package labels are
//! drawn by this module: shortened, and turned upright when they would not fit side by side.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::markdown::human;
use super::PackageReport;

const FONT: &str = "sans-serif";
const LABEL_SIZE: f64 = 13.0;
/// Longest package label shown, in characters.
const LABEL_MAX: usize = 40;
const TITLE_H: u32 = 44;
const PLOT_H: u32 = 230;

const PACKAGE: RGBColor = RGBColor(110, 130, 160);
const VMLINUZ: RGBColor = RGBColor(31, 119, 180);
const MODULES: RGBColor = RGBColor(255, 127, 14);
const ALERT: RGBColor = RGBColor(214, 39, 40);

/// The chart of `packages` (oldest first) against `budget`, as an SVG document.
pub fn chart(packages: &[PackageReport], budget: u64) -> crate::Result<String> {
    let layout = Layout::of(packages);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (layout.width, layout.height)).into_drawing_area();
        draw(&root, packages, budget, &layout)
            .map_err(|e| crate::Error::failed("SVG chart", format!("drawing: {e}")))?;
        root.present()
            .map_err(|e| crate::Error::failed("SVG chart", format!("finishing: {e}")))?;
    }
    Ok(svg)
}

/// Sizes and labels, from the labels' estimated widths.
struct Layout {
    labels: Vec<String>,
    x_desc: String,
    rotate: bool,
    /// Height under each panel for the package labels.
    label_band: u32,
    width: u32,
    height: u32,
}

impl Layout {
    fn of(packages: &[PackageReport]) -> Layout {
        let first = packages.first().map(|p| p.name.as_str()).unwrap_or("");
        let same_name = packages.len() > 1
            && packages
                .iter()
                .all(|p| p.name == first && !p.version.is_empty());
        let (labels, x_desc): (Vec<String>, String) = if same_name {
            (
                packages.iter().map(|p| shorten(&p.version)).collect(),
                format!("{} version", clean(first)),
            )
        } else if let Some(releases) = one_flavour_releases(packages) {
            // Debian names carry the ABI (linux-image-6.1.0-55-cloud-amd64): one flavour, so
            // the kernel release tells the packages apart.
            (
                releases.iter().map(|r| shorten(r)).collect(),
                format!("{} kernel release", clean(&super::flavour(first))),
            )
        } else {
            (
                packages.iter().map(|p| shorten(&p.label)).collect(),
                "package".to_string(),
            )
        };
        let widest = labels.iter().map(|l| text_width(l)).max().unwrap_or(0);
        // A slot per package: wide enough for its label, else labels are turned upright.
        let rotate = widest + 16 > 180;
        // Upright labels still leave room for a bar's value (`67.7 MiB`) above it.
        let slot = if rotate { 58 } else { (widest + 16).max(90) };
        let label_band = if rotate { widest + 24 } else { 28 };
        let n = u32::try_from(packages.len().max(1)).unwrap_or(u32::MAX);
        let width = n.saturating_mul(slot).saturating_add(120).clamp(640, 8000);
        // Each panel: caption, plot, labels, axis description.
        let height = TITLE_H + 2 * (30 + PLOT_H + label_band + 30);
        Layout {
            labels,
            x_desc,
            rotate,
            label_band,
            width,
            height,
        }
    }
}

/// Drops what XML cannot hold and shortens to `LABEL_MAX` characters.
fn shorten(s: &str) -> String {
    let c = clean(s);
    if c.chars().count() <= LABEL_MAX {
        return c;
    }
    let mut out: String = c.chars().take(LABEL_MAX - 1).collect();
    out.push('…');
    out
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Width of `s` in pixels at `LABEL_SIZE` as plotters estimates it without font files.
fn text_width(s: &str) -> u32 {
    let em = LABEL_SIZE / 1.24 / 1.24;
    (em * 0.7 * s.len() as f64).ceil() as u32
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(root: &Area<'_>, packages: &[PackageReport], budget: u64, l: &Layout) -> DrawResult {
    root.fill(&WHITE)?;
    let body = root.titled(
        &format!(
            "BTF cost across {} {}",
            packages.len(),
            if packages.len() == 1 {
                "package"
            } else {
                "packages"
            }
        ),
        (FONT, 22),
    )?;
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2);
    let n = packages.len().max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let kib = |b: u64| b as f64 / 1024.0;

    // Top: package file size.
    let top_max = packages
        .iter()
        .map(|p| mib(p.size.package))
        .fold(0.0, f64::max);
    let mut chart = panel(&top, "Package file size", "MiB", top_max * 1.5, n, l)?;
    chart
        .draw_series(
            packages
                .iter()
                .enumerate()
                .map(|(i, p)| bar(i, 0.0, mib(p.size.package), PACKAGE)),
        )?
        .label("package file")
        .legend(|(x, y)| swatch(x, y, PACKAGE));
    for (i, p) in packages.iter().enumerate() {
        let at = chart.backend_coord(&(i as f64 + 0.5, mib(p.size.package)));
        value(root, &human(p.size.package), at, BLACK)?;
    }
    legend(&mut chart)?;
    x_labels(root, &chart, l)?;

    // Bottom: BTF cost, the two shares stacked, the budget dashed.
    let totals = packages.iter().map(|p| kib(p.size.total));
    let bottom_max = totals.fold(kib(budget), f64::max);
    let mut chart = panel(
        &bottom,
        "BTF cost: vmlinuz and modules BTF shares",
        "KiB",
        bottom_max * 1.7,
        n,
        l,
    )?;
    let vm = |p: &PackageReport| kib(p.size.vmlinuz_btf.unwrap_or(0));
    chart
        .draw_series(
            packages
                .iter()
                .enumerate()
                .map(|(i, p)| bar(i, 0.0, vm(p), VMLINUZ)),
        )?
        .label("vmlinuz BTF share")
        .legend(|(x, y)| swatch(x, y, VMLINUZ));
    chart
        .draw_series(
            packages
                .iter()
                .enumerate()
                .map(|(i, p)| bar(i, vm(p), vm(p) + kib(p.size.modules_btf), MODULES)),
        )?
        .label("modules BTF share")
        .legend(|(x, y)| swatch(x, y, MODULES));
    let b = kib(budget);
    chart
        .draw_series(std::iter::once(DashedPathElement::new(
            vec![(0.0, b), (n, b)],
            8,
            5,
            ALERT.stroke_width(2),
        )))?
        .label(format!("budget {}", human(budget)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], ALERT.stroke_width(2)));
    for (i, p) in packages.iter().enumerate() {
        let total = p.size.total;
        let at = chart.backend_coord(&(i as f64 + 0.5, kib(total)));
        let (text, color) = if total == 0 {
            // Nothing to stack: a red floor on the axis says "zero", not "missing".
            let (x0, y0) = chart.backend_coord(&(i as f64 + 0.15, 0.0));
            let (x1, _) = chart.backend_coord(&(i as f64 + 0.85, 0.0));
            root.draw(&Rectangle::new([(x0, y0 - 4), (x1, y0)], ALERT.filled()))?;
            ("no BTF".to_string(), ALERT)
        } else if total > budget {
            (human(total), ALERT)
        } else {
            (human(total), BLACK)
        };
        value(root, &text, at, color)?;
    }
    legend(&mut chart)?;
    x_labels(root, &chart, l)?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: x is the package index (bar `i` centred at `i + 0.5`), y from 0 to `y_max`.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    unit: &str,
    y_max: f64,
    n: f64,
    l: &Layout,
) -> Result<Chart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
    let y_max = if y_max.is_finite() && y_max > 0.0 {
        y_max
    } else {
        1.0
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin_left(10)
        .margin_right(20)
        .x_label_area_size(l.label_band + 26)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n, 0.0..y_max)?;
    let decimals = if y_max < 10.0 { 1 } else { 0 };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .y_desc(unit)
        .x_desc(l.x_desc.as_str())
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    Ok(chart)
}

/// A bar's value above its top `(x, y)`, on a white ground so a grid or budget line under it
/// does not strike it through.
fn value(root: &Area<'_>, text: &str, (x, y): (i32, i32), color: RGBColor) -> DrawResult {
    const SIZE: f64 = 12.0;
    let half = (SIZE / 1.24 / 1.24 * 0.7 * text.len() as f64 / 2.0).ceil() as i32 + 2;
    let (bottom, top) = (y - 3, y - 3 - SIZE as i32);
    root.draw(&Rectangle::new(
        [(x - half, top), (x + half, bottom)],
        WHITE.mix(0.85).filled(),
    ))?;
    root.draw(&Text::new(
        text.to_string(),
        (x, bottom - 1),
        TextStyle::from((FONT, SIZE))
            .color(&color)
            .pos(Pos::new(HPos::Center, VPos::Bottom)),
    ))
}

fn bar(i: usize, y0: f64, y1: f64, color: RGBColor) -> Rectangle<(f64, f64)> {
    let x = i as f64;
    Rectangle::new([(x + 0.15, y0), (x + 0.85, y1)], color.filled())
}

fn swatch(x: i32, y: i32, color: RGBColor) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
}

/// The package labels under a panel, centred under their bars or turned upright.
fn x_labels(root: &Area<'_>, chart: &Chart<'_, '_>, l: &Layout) -> DrawResult {
    for (i, label) in l.labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = TextStyle::from((FONT, LABEL_SIZE));
        let style = if l.rotate {
            style
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            style.pos(Pos::new(HPos::Center, VPos::Top))
        };
        root.draw(&Text::new(label.clone(), (x, y + 8), style))?;
    }
    Ok(())
}

/// The packages' kernel releases when they are several packages of one flavour (names equal
/// but for version-like parts) with distinct, known releases.
fn one_flavour_releases(packages: &[PackageReport]) -> Option<Vec<String>> {
    let first = packages.first()?;
    let flavour = super::flavour(&first.name);
    if packages.len() < 2 || packages.iter().any(|p| super::flavour(&p.name) != flavour) {
        return None;
    }
    let releases: Vec<String> = packages
        .iter()
        .map(|p| p.release.clone())
        .collect::<Option<_>>()?;
    let mut unique = releases.clone();
    unique.sort();
    unique.dedup();
    (unique.len() == releases.len()).then_some(releases)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::sample::{breakdown, failing, passing, report};

    fn labels_in(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').map(|(_, r)| r))
            .filter_map(|r| r.split_once("</text>").map(|(t, _)| t.trim().to_string()))
            .collect()
    }

    #[test]
    fn one_package() {
        let svg = chart(&[passing()], 2 << 20).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = labels_in(&svg);
        for want in [
            "BTF cost across 1 package",
            "linux-image-amd64 6.1.0-18",
            "package file",
            "vmlinuz BTF share",
            "modules BTF share",
            "budget 2.00 MiB",
            "MiB",
            "KiB",
            "66.8 MiB",
            "1.91 MiB",
        ] {
            assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("\"inf") && !svg.contains("\"-inf"));
    }

    #[test]
    fn same_name_uses_versions_and_zero_is_visible() {
        let svg = chart(&[passing(), failing()], 2 << 20).unwrap();
        let texts = labels_in(&svg);
        for want in [
            "6.1.0-18",
            "6.1.0-21",
            "linux-image-amd64 version",
            "no BTF",
        ] {
            assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
        }
        // The red floor drawn for the package without BTF.
        assert!(svg.contains(r##"fill="#D62728""##), "{svg}");
    }

    #[test]
    fn labels_are_escaped_and_long_ones_turned() {
        let mut many = Vec::new();
        for i in 0..12 {
            many.push(report(
                &format!("linux-<flavour{i}>&co"),
                "6.12.13-r0",
                breakdown(60_000_000 + i * 1_000_000, Some(1_500_000), 900_000),
                vec![],
            ));
        }
        let svg = chart(&many, 2 << 20).unwrap();
        assert!(
            svg.contains("linux-&lt;flavour3&gt;&amp;co 6.12.13-r0"),
            "{svg}"
        );
        // Two rotated axis descriptions, and 2 × 12 upright package labels.
        assert_eq!(
            svg.matches("rotate(270").count(),
            2 + 24,
            "long labels are upright"
        );
        // Over budget: the value is red.
        assert!(svg.contains("fill=\"#D62728\">\n2.29 MiB"), "{svg}");
        assert!(!svg.contains("<flavour"));
        let short = chart(&[passing(), failing()], 2 << 20).unwrap();
        assert_eq!(
            short.matches("rotate(270").count(),
            2,
            "short labels stay flat"
        );
    }

    #[test]
    fn empty_input_is_still_a_document() {
        let svg = chart(&[], 2 << 20).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }
}
