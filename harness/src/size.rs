//! What BTF costs a package: the vmlinux `.BTF` share of the compressed kernel image plus each
//! module's `.BTF` share, as compressed in the package; laid out like the table of Alpine's BTF
//! request (aports issue 12563) so maintainers can compare numbers.

use serde::Serialize;

use crate::codec::Codec;
use crate::kernel::Kernel;

/// Default budget for the BTF cost of a package: 2 MiB.
pub const DEFAULT_BUDGET: u64 = 2 << 20;

/// The size breakdown of a kernel package.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// Package file size.
    pub package: u64,
    pub installed: Option<u64>,
    /// Kernel image file size.
    pub vmlinuz: u64,
    /// BTF share of the kernel image, and how it was priced.
    pub vmlinuz_btf: Option<u64>,
    pub vmlinuz_method: String,
    pub modules: u64,
    pub module_count: usize,
    pub modules_with_btf: usize,
    /// Raw `.BTF` bytes in vmlinux and in all modules.
    pub vmlinux_btf_raw: u64,
    pub modules_btf_raw: u64,
    /// BTF share of the module files as stored in the package.
    pub modules_btf: u64,
    /// The modules are compressed files (`.ko.xz`…), on disk as in the package.
    pub modules_compressed: bool,
    pub modules_method: String,
    /// Total BTF cost: `vmlinuz_btf + modules_btf`.
    pub total: u64,
}

impl Breakdown {
    pub fn of(k: &Kernel) -> Breakdown {
        let vm = k.vmlinux_btf();
        let (vmlinuz_btf, vmlinuz_method) =
            match (vm, k.image.as_ref().and_then(|i| i.payload.as_ref().ok())) {
                (Some(v), Some(p)) => match &v.cost {
                    Ok(c) if crate::kernel::share::precise_for_image(p.codec) => (
                        Some(*c),
                        format!(
                            "the compressed bytes of the {} payload that encode .BTF",
                            p.codec.name()
                        ),
                    ),
                    Ok(c) => (
                        Some(*c),
                        format!(
                            ".BTF compressed alone with the payload codec ({})",
                            p.codec.name()
                        ),
                    ),
                    Err(e) => (None, format!("not priced: {}", e.message())),
                },
                _ => (None, "no vmlinux .BTF".to_string()),
            };
        let container = (k.modules.first()).and_then(|m| k.packages.get(m.package)?.container);
        let modules_method = match (k.modules.iter().map(|m| m.codec).next(), container) {
            (None, _) => "no modules".to_string(),
            (Some(Codec::None), Some(c)) if c != Codec::None => format!(
                "each module's share of the solid {} data member, pro rata of its .BTF bytes",
                c.name()
            ),
            (Some(Codec::None), _) => "raw .BTF bytes (modules stored uncompressed)".to_string(),
            (Some(c), _) if crate::kernel::share::precise_for_module(c) => format!(
                "the compressed bytes of each {} module file that encode its .BTF",
                c.name()
            ),
            (Some(c), _) => format!("each module's .BTF compressed alone with {}", c.name()),
        };
        let modules_btf: u64 = k.modules.iter().map(|m| m.btf_cost).sum();
        let modules_compressed = k.modules.iter().any(|m| m.codec != Codec::None);
        Breakdown {
            package: k.file_size(),
            installed: k.installed_size(),
            vmlinuz: k.image.as_ref().map(|i| i.file_size).unwrap_or(0),
            vmlinuz_btf,
            vmlinuz_method,
            modules: k.modules.iter().map(|m| m.file_size).sum(),
            module_count: k.modules.len(),
            modules_with_btf: k.modules.iter().filter(|m| m.btf_len.is_some()).count(),
            vmlinux_btf_raw: vm.map(|v| v.bytes.len() as u64).unwrap_or(0),
            modules_btf_raw: k.modules.iter().filter_map(|m| m.btf_len).sum(),
            modules_btf,
            modules_compressed,
            modules_method,
            total: vmlinuz_btf.unwrap_or(0) + modules_btf,
        }
    }

    /// Rows of the Alpine-style table: (what, size with BTF, BTF share, size without BTF).
    pub fn rows(&self) -> Vec<(String, u64, u64, u64)> {
        let vb = self.vmlinuz_btf.unwrap_or(0);
        let mut rows = vec![
            (
                "vmlinuz".to_string(),
                self.vmlinuz,
                vb,
                self.vmlinuz.saturating_sub(vb),
            ),
            (
                format!(
                    "modules ({}, {} with .BTF)",
                    self.module_count, self.modules_with_btf
                ),
                self.modules,
                self.modules_btf,
                self.modules.saturating_sub(self.modules_btf),
            ),
            (
                "package file".to_string(),
                self.package,
                self.total,
                self.package.saturating_sub(self.total),
            ),
        ];
        // Installed, the kernel image is as compressed as in the package (its share is the
        // vmlinuz row's); modules are on disk as they are in the package: compressed files
        // carry their compressed share, uncompressed ones their raw `.BTF` bytes.
        if let Some(i) = self.installed {
            let (what, modules) = if self.modules_compressed {
                (
                    "installed (module .BTF as compressed on disk)",
                    self.modules_btf,
                )
            } else {
                ("installed (raw module .BTF)", self.modules_btf_raw)
            };
            let share = vb + modules;
            rows.push((what.to_string(), i, share, i.saturating_sub(share)));
        }
        rows
    }
}

/// Parses a size such as `2MiB`, `2M`, `1.5 MB`, `300k`, `1048576`.
pub fn parse_size(s: &str) -> crate::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        crate::Error::failed(
            "size",
            format!("{s:?}: expected a number with an optional unit (e.g. 2MiB, 500k)"),
        )
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1000.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        other => {
            return Err(crate::Error::failed(
                "size",
                format!(
                    "{s:?}: unknown unit {other:?} (use B, k, KiB, KB, M, MiB, MB, G, GiB, GB)"
                ),
            ))
        }
    };
    Ok((n * mult).round() as u64)
}

/// `1,234,567` style thousands separators.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(modules_compressed: bool) -> Breakdown {
        Breakdown {
            package: 100_000_000,
            installed: Some(38_090_336),
            vmlinuz: 11_000_000,
            vmlinuz_btf: Some(1_500_000),
            vmlinuz_method: String::new(),
            modules: 20_000_000,
            module_count: 1_000,
            modules_with_btf: 1_000,
            vmlinux_btf_raw: 6_000_000,
            modules_btf_raw: 25_653_401,
            modules_btf: 4_000_000,
            modules_compressed,
            modules_method: String::new(),
            total: 5_500_000,
        }
    }

    /// A split 7.3 kernel with `.ko.xz` modules printed installed 38,090,336 less the raw
    /// `.BTF` (25,653,401 + vmlinux's), a size no installation has: compressed modules carry
    /// their compressed share on disk, the image its vmlinuz share.
    #[test]
    fn installed_share_follows_how_modules_are_stored() {
        let row = |b: &Breakdown| b.rows().into_iter().find(|r| r.0.starts_with("installed"));
        let (what, with, share, without) = row(&sample(true)).unwrap();
        assert_eq!(what, "installed (module .BTF as compressed on disk)");
        assert_eq!((with, share, without), (38_090_336, 5_500_000, 32_590_336));
        let (what, _, share, _) = row(&sample(false)).unwrap();
        assert_eq!(what, "installed (raw module .BTF)");
        assert_eq!(share, 1_500_000 + 25_653_401);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("1.5 MB").unwrap(), 1_500_000);
        assert_eq!(parse_size("300k").unwrap(), 300 * 1024);
        assert_eq!(parse_size("77").unwrap(), 77);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(12), "12");
    }
}
