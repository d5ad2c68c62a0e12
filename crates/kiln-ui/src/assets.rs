//! Static files compiled into the binary, each served under a name carrying the first 16 hex
//! digits of its sha256 (`/ui/static/uPlot.iife.min.3f2a….js`), so a browser may cache it
//! for a year (`immutable`) and a new build's file has a new name.
//!
//! uPlot 1.6.32 comes from the npm registry (`npm pack uplot`: `dist/uPlot.iife.min.js`,
//! `dist/uPlot.min.css` and its MIT `LICENSE`, copied unchanged); nothing is fetched from a
//! CDN and no JavaScript build chain runs. `app.js` and `app.css` are the UI's own.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// The `Cache-Control` of every asset.
pub const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// One static file.
#[derive(Debug)]
pub struct Asset {
    /// Its name with the content hash (`uPlot.iife.min.<hash>.js`).
    pub name: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        let hash = hex::encode(Sha256::digest(bytes));
        Asset { name: format!("{stem}.{}.{ext}", &hash[..16]), content_type, bytes }
    }

    /// Where pages link it.
    pub fn url(&self) -> String {
        format!("/ui/static/{}", self.name)
    }
}

/// Every asset, built (hashed) once.
#[derive(Debug)]
pub struct Assets {
    pub uplot_js: Asset,
    pub uplot_css: Asset,
    pub uplot_license: Asset,
    pub app_js: Asset,
    pub app_css: Asset,
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    uplot_js: Asset::new(
        "uPlot.iife.min",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    uplot_css: Asset::new(
        "uPlot.min",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/uPlot.min.css"),
    ),
    uplot_license: Asset::new(
        "uPlot.LICENSE",
        "txt",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/uPlot.LICENSE"),
    ),
    app_js: Asset::new("app", "js", "text/javascript; charset=utf-8", include_bytes!("app.js")),
    app_css: Asset::new("app", "css", "text/css; charset=utf-8", include_bytes!("app.css")),
});

/// The asset served under `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    let a = &*ASSETS;
    [&a.uplot_js, &a.uplot_css, &a.uplot_license, &a.app_js, &a.app_css]
        .into_iter()
        .find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let js = &ASSETS.uplot_js;
        let hash = hex::encode(Sha256::digest(js.bytes));
        assert_eq!(js.name, format!("uPlot.iife.min.{}.js", &hash[..16]));
        assert!(find(&js.name).is_some());
        assert!(find("uPlot.iife.min.js").is_none(), "only the hashed name is served");
        assert!(ASSETS.uplot_license.bytes.starts_with(b"The MIT License"));
    }
}
