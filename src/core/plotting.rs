//! What every chart shares: plotters on an RGB buffer with a bundled font, so figures
//! look the same on every machine.

use std::sync::Once;

use anyhow::{Result, anyhow};
use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The family name the bundled DejaVu Sans is registered under.
pub(crate) const FONT: &str = "sans-serif";

/// A plotters drawing area on the image being rendered.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        assert!(
            plotters::style::register_font(FONT, FontStyle::Normal, font).is_ok(),
            "bundled font is valid"
        );
    });
}

/// A white `w` x `h` image with `draw` rendered on it.
pub(crate) fn render(
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<RgbImage> {
    draw_on(RgbImage::from_pixel(w, h, Rgb([255, 255, 255])), draw)
}

/// `image` with `draw` rendered over it.
pub(crate) fn draw_on(
    image: RgbImage,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<RgbImage> {
    register_font();
    let (w, h) = image.dimensions();
    let mut buf = image.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("buffer size matches"))
}

pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}
