//! Debian kernels through apt: the host's (`NAME`, `NAME@previous`: the ABI before the meta
//! package's) or btfgate's own configuration for a suite (`NAME@SUITE`, see `suites.rs`). A
//! name resolves to the whole set of packages of one kernel, downloaded with `apt-get
//! download` (apt checks each file against its signed index) into the store.
//!
//! The set: from a meta package (`linux-image-cloud-amd64`) follow `Depends` and
//! `Pre-Depends` to versioned packages only (`linux-<word>-<release>`, the release starting
//! with a digit; never `linux-base`, `initramfs-tools`, `kmod` or the unversioned metas
//! `linux-base-cloud-amd64`, `linux-modules-cloud-amd64`), and on through versioned ones. Every
//! versioned package reached carries content except a pointer (see [`is_pointer`]).

// One file because the rule, the numbers it was measured on and the captured `apt-cache`
// records that test it belong side by side (the tests are a third of it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use harness::paths::{cache_dir, Flavor};
use harness::process::Cmd;

use super::store::{record, single_file, store};
use super::suites::{self, At, Config};
use super::{Unavailable, DOWNLOAD, QUERY};

/// A versioned package below this installed size that depends on other versioned linux
/// packages is a pointer, not content. Measured (apt-cache show, `Installed-Size` in KiB):
/// the pointers `linux-image-7.3.4+deb13-{cloud-,}amd64` (trixie-backports) and
/// `linux-image-7.2.13+deb14-{cloud-,}amd64` (sid) are 15 KiB (a 1.9 kB .deb of docs); the
/// smallest content package is `linux-base-7.2.13+deb14-amd64` at 963 KiB (config,
/// System.map; cloud 1,247 KiB), then the images `linux-binary-*` at 13,652–14,220 KiB, the
/// modules at 22,958 (cloud) and 109,569 KiB, and the one-package kernels of trixie
/// (`linux-image-6.12.117+deb13-cloud-amd64`, 34,930 KiB) and bookworm
/// (`linux-image-6.1.0-50-cloud-amd64`, 105,110 KiB), which depend on no versioned package.
const POINTER_KIB: u64 = 100;

/// The fields of one `apt-cache show` record the resolution reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    package: String,
    version: String,
    arch: String,
    /// `Installed-Size`, KiB.
    installed_kib: u64,
    /// The versioned linux packages it depends on (first such alternative of each group).
    links: Vec<Link>,
}

/// A dependency on a versioned linux package, with its exact version when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    version: Option<String>,
}

/// Whether `name` is a versioned kernel package: `linux-`, words, then a part that starts
/// with a digit (`linux-image-6.1.0-50-cloud-amd64`, `linux-binary-7.3.4+deb13-amd64`).
fn versioned(name: &str) -> bool {
    let mut parts = name.split('-');
    if parts.next() != Some("linux") {
        return false;
    }
    for (words, p) in parts.enumerate() {
        if p.starts_with(|c: char| c.is_ascii_digit()) {
            return words > 0;
        }
        if !p.chars().all(|c| c.is_ascii_lowercase()) {
            return false;
        }
    }
    false
}

/// A pointer: versioned, depends on versioned linux packages, and tiny ([`POINTER_KIB`]).
fn is_pointer(r: &Record) -> bool {
    !r.links.is_empty() && r.installed_kib < POINTER_KIB
}

/// The versioned linux packages of a `Depends` value.
fn links(depends: &str) -> Vec<Link> {
    depends
        .split(',')
        .filter_map(|group| {
            group.split('|').find_map(|alt| {
                let alt = alt.trim();
                let (name, rest) = alt.split_once([' ', '(']).unwrap_or((alt, ""));
                let name = name.split(':').next().unwrap_or(name);
                if !versioned(name) {
                    return None;
                }
                let version = rest
                    .split_once('(')
                    .and_then(|(_, r)| r.split_once(')'))
                    .and_then(|(c, _)| c.trim().strip_prefix('='))
                    .map(|v| v.trim().to_string());
                Some(Link {
                    name: name.to_string(),
                    version,
                })
            })
        })
        .collect()
}

/// The first record of `apt-cache show` output.
fn parse_record(text: &str) -> Option<Record> {
    let stanza = text.split("\n\n").next()?;
    let field = |k: &str| {
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':').map(str::trim))
    };
    let mut links = Vec::new();
    for k in ["Pre-Depends", "Depends"] {
        links.extend(field(k).map(self::links).unwrap_or_default());
    }
    Some(Record {
        package: field("Package")?.to_string(),
        version: field("Version")?.to_string(),
        arch: field("Architecture")?.to_string(),
        installed_kib: field("Installed-Size")?.parse().ok()?,
        links,
    })
}

/// The apt to ask: the host's, or btfgate's configuration for a suite.
struct Apt {
    suite: Option<&'static str>,
    options: Vec<String>,
}

impl Apt {
    fn host() -> Apt {
        Apt {
            suite: None,
            options: Vec::new(),
        }
    }

    /// btfgate's configuration for `suite`, its lists updated if they are old.
    fn suite(suite: &'static str) -> Result<Apt> {
        let c = Config::suites();
        c.ready(false)?;
        Ok(Apt {
            suite: Some(suite),
            options: c.options(),
        })
    }

    /// Where packages come from, for messages.
    fn place(&self) -> String {
        match self.suite {
            Some(s) => s.to_string(),
            None => "the host's apt sources".to_string(),
        }
    }

    /// How apt names `name` here: the suite's version, or the host's candidate.
    fn target(&self, name: &str, version: Option<&str>) -> String {
        match (version, self.suite) {
            (Some(v), _) => format!("{name}={v}"),
            (None, Some(s)) => format!("{name}/{s}"),
            (None, None) => name.to_string(),
        }
    }

    fn cache(&self) -> Cmd {
        Cmd::new("apt-cache", QUERY).args(&self.options)
    }

    /// The record apt has for `target`, or None when it knows no such package (or version).
    fn show(&self, target: &str) -> Result<Option<Record>> {
        let (status, out, err) = self
            .cache()
            .args(["show", "--no-all-versions", target])
            .output()
            .map_err(|e| Unavailable(format!("apt-cache show {target}: {e}")))?;
        let out = String::from_utf8_lossy(&out);
        let err = String::from_utf8_lossy(&err);
        if out.trim().is_empty() && (status.success() || err.contains("No packages found")) {
            return Ok(None);
        }
        if !status.success() {
            return Err(Unavailable(format!(
                "apt-cache show {target} in {}: {status}: {}",
                self.place(),
                err.trim()
            ))
            .into());
        }
        Ok(parse_record(&out))
    }

    /// The records of several targets in one run, or None when apt misses any.
    fn show_all(&self, targets: &[String]) -> Result<Option<Vec<Record>>> {
        let (status, out, _) = self
            .cache()
            .args(["show", "--no-all-versions"])
            .args(targets)
            .output()
            .map_err(|e| Unavailable(format!("apt-cache show {}: {e}", targets.join(" "))))?;
        if !status.success() {
            return Ok(None);
        }
        let out = String::from_utf8_lossy(&out);
        Ok(Some(out.split("\n\n").filter_map(parse_record).collect()))
    }

    /// Updates the lists once (this run) after a lookup found nothing; whether they changed.
    fn refresh(&self) -> Result<bool> {
        match self.suite {
            Some(_) => Config::suites().ready(true),
            None => {
                crate::host::refresh_lists()?;
                Ok(true)
            }
        }
    }

    /// The record of `name` (at `version`), updating the lists once if apt knows none.
    fn lookup(&self, name: &str, version: Option<&str>) -> Result<Option<Record>> {
        if let Some(r) = self.newest(name, version)? {
            return Ok(Some(r));
        }
        if self.refresh()? {
            return self.newest(name, version);
        }
        Ok(None)
    }

    /// The record of `name` (at `version`). A stable suite's current packages are the newest
    /// of the suite and its `-updates` and `-security` archives (a kernel's security update
    /// is only in the latter), as the host's own apt sees them.
    fn newest(&self, name: &str, version: Option<&str>) -> Result<Option<Record>> {
        let stable = (self.suite).filter(|s| version.is_none() && suites::STABLE.contains(s));
        let Some(suite) = stable else {
            return self.show(&self.target(name, version));
        };
        let mut best: Option<Record> = None;
        for archive in [
            suite.to_string(),
            format!("{suite}-updates"),
            format!("{suite}-security"),
        ] {
            let Some(r) = self.show(&format!("{name}/{archive}"))? else {
                continue;
            };
            best = match best {
                Some(b) if !newer(&r.version, &b.version)? => Some(b),
                _ => Some(r),
            };
        }
        Ok(best)
    }
}

/// Whether Debian version `a` is newer than `b` (dpkg's ordering).
fn newer(a: &str, b: &str) -> Result<bool> {
    let (status, _, _) = Cmd::new("dpkg", QUERY)
        .args(["--compare-versions", a, "gt", b])
        .output()
        .map_err(|e| Unavailable(format!("dpkg --compare-versions {a} gt {b}: {e}")))?;
    Ok(status.success())
}

/// What `versioned` means, for messages.
const EXPECTED: &str = "a meta package such as linux-image-cloud-amd64 or a versioned one \
                        such as linux-image-<release>-cloud-amd64";

/// The content packages of the kernel `name` stands for in `apt`, sorted by name. Walks the
/// graph a level at a time, one `apt-cache show` per level (each reads the lists' records).
fn resolve(apt: &Apt, spec: &str, name: &str) -> Result<Vec<Record>> {
    let root = apt.lookup(name, None)?.ok_or_else(|| {
        Unavailable(format!(
            "apt:{spec}: apt knows no package {name} in {}",
            apt.place()
        ))
    })?;
    let mut level = if versioned(name) {
        vec![root]
    } else if root.links.is_empty() {
        anyhow::bail!(
            "apt:{spec}: {name} {} in {} depends on no versioned linux package (expected {EXPECTED})",
            root.version,
            apt.place()
        );
    } else {
        let links: Vec<(&Record, &Link)> = root.links.iter().map(|l| (&root, l)).collect();
        dependencies(apt, spec, &links)?
    };
    let mut seen = BTreeSet::new();
    let mut set = BTreeMap::new();
    while !level.is_empty() {
        for r in &level {
            seen.insert(r.package.clone());
        }
        let mut next: Vec<(&Record, &Link)> = Vec::new();
        for r in &level {
            for l in &r.links {
                if !seen.contains(&l.name) && !next.iter().any(|(_, n)| n.name == l.name) {
                    next.push((r, l));
                }
            }
        }
        let found = dependencies(apt, spec, &next)?;
        for r in level {
            if !is_pointer(&r) {
                set.insert(r.package.clone(), r);
            }
        }
        level = found;
    }
    if set.is_empty() {
        anyhow::bail!(
            "apt:{spec}: {name} in {} leads to no package with content (expected {EXPECTED})",
            apt.place()
        );
    }
    Ok(set.into_values().collect())
}

/// The records of the packages `links` name (each with the package depending on it): one
/// `apt-cache show` for all, or one each (with their own errors) when that misses any.
fn dependencies(apt: &Apt, spec: &str, links: &[(&Record, &Link)]) -> Result<Vec<Record>> {
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let targets: Vec<String> = links
        .iter()
        .map(|(_, l)| apt.target(&l.name, l.version.as_deref()))
        .collect();
    if let Some(all) = apt.show_all(&targets)? {
        let picked: Option<Vec<Record>> = links
            .iter()
            .map(|(_, l)| {
                all.iter()
                    .find(|r| {
                        r.package == l.name && l.version.as_ref().is_none_or(|v| *v == r.version)
                    })
                    .cloned()
            })
            .collect();
        if let Some(p) = picked {
            return Ok(p);
        }
    }
    links
        .iter()
        .map(|(parent, l)| dependency(apt, spec, parent, l))
        .collect()
}

/// The record of the package `parent` depends on through `l`.
fn dependency(apt: &Apt, spec: &str, parent: &Record, l: &Link) -> Result<Record> {
    apt.lookup(&l.name, l.version.as_deref())?.ok_or_else(|| {
        Unavailable(format!(
            "apt:{spec}: apt knows no package {}{} in {}, which {} {} depends on",
            l.name,
            l.version
                .as_deref()
                .map(|v| format!(" (= {v})"))
                .unwrap_or_default(),
            apt.place(),
            parent.package,
            parent.version
        ))
        .into()
    })
}

/// The image package a meta package depends on in the host's apt (`linux-image-amd64` →
/// `linux-image-6.1.0-48-amd64`).
fn host_image(spec: &str, meta: &str) -> Result<String> {
    let apt = Apt::host();
    let r = apt.lookup(meta, None)?.ok_or_else(|| {
        Unavailable(format!(
            "apt:{spec}: apt knows no package {meta} in the host's apt sources (is this an amd64 \
             Debian with main enabled?)"
        ))
    })?;
    r.links
        .iter()
        .map(|l| l.name.clone())
        .find(|n| n.starts_with("linux-image-"))
        .with_context(|| {
            format!(
                "apt:{spec}: {meta} {} depends on no versioned linux-image package",
                r.version
            )
        })
}

/// The image package of the highest ABI below `current`'s that the host's apt can download
/// (`linux-image-6.1.0-56-cloud-amd64` → `linux-image-6.1.0-55-cloud-amd64`).
fn apt_previous(current: &str) -> Result<String> {
    let bad = || {
        harness::Error::bad(
            Path::new(current),
            "find the previous kernel ABI",
            "expected linux-image-<version>-<abi>-<flavour>",
        )
    };
    let rest = current.strip_prefix("linux-image-").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '-');
    let (version, abi, flavour) = match (parts.next(), parts.next(), parts.next()) {
        (Some(v), Some(a), Some(f)) => (v, a.parse::<u32>().map_err(|_| bad())?, f),
        _ => return Err(bad().into()),
    };
    let pattern = format!(
        "^linux-image-{}-[0-9]+-{}$",
        version.replace('.', "\\."),
        flavour
    );
    let out = Cmd::new("apt-cache", QUERY)
        .args(["search", "--names-only", &pattern])
        .read()
        .map_err(|e| Unavailable(format!("apt-cache search {pattern}: {e}")))?;
    let prefix = format!("linux-image-{version}-");
    let suffix = format!("-{flavour}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let a = n.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            a.parse::<u32>().ok().map(|a| (a, n.to_string()))
        })
        .filter(|(a, _)| *a < abi)
        .max()
        .map(|(_, n)| n)
        .ok_or_else(|| {
            Unavailable(format!(
                "apt knows no {prefix}<abi>{suffix} older than {current}"
            ))
            .into()
        })
}

/// The apt and the package name where the set of `spec` starts.
fn start(spec: &str) -> Result<(Apt, String)> {
    let s = suites::parse(spec)?;
    Ok(match s.at {
        At::Host => (Apt::host(), s.name),
        At::Previous => (Apt::host(), apt_previous(&host_image(spec, &s.name)?)?),
        At::Suite(suite) => (Apt::suite(suite)?, s.name),
    })
}

/// Fetches the whole set of packages of the kernel `spec` (what follows `apt:`: `NAME`,
/// `NAME@previous`, `NAME@SUITE`) names; the stored paths, sorted by package name.
pub fn apt_fetch_set(spec: &str) -> Result<Vec<PathBuf>> {
    let (apt, name) = start(spec)?;
    let set = resolve(&apt, spec, &name)?;
    set.iter().map(|r| download(&apt, spec, r)).collect()
}

/// [`apt_fetch_set`], then records where the set is (one path a line) under `spec`.
pub fn apt_fetch_recorded(spec: &str) -> Result<Vec<PathBuf>> {
    let paths = apt_fetch_set(spec)?;
    record(spec, &paths)?;
    Ok(paths)
}

/// The set of each default flavour's meta package in the host's apt, recorded under the meta
/// package's name.
pub(super) fn host_default_sets_apt() -> Result<Vec<Vec<PathBuf>>> {
    Flavor::ALL
        .iter()
        .map(|f| apt_fetch_recorded(f.debian_meta()))
        .collect()
}

/// Downloads the package of `r` into the store, unless it is there already (apt verifies
/// the file against its signed index).
fn download(apt: &Apt, spec: &str, r: &Record) -> Result<PathBuf> {
    let dest = cache_dir().join("apt");
    std::fs::create_dir_all(&dest).with_context(|| format!("create {}", dest.display()))?;
    // Already fetched? apt names files <name>_<version>_<arch>.deb, an epoch's colon quoted.
    let file = dest.join(format!(
        "{}_{}_{}.deb",
        r.package,
        r.version.replace(':', "%3a"),
        r.arch
    ));
    if file.is_file() {
        return std::fs::canonicalize(&file).with_context(|| format!("resolve {}", file.display()));
    }
    let target = apt.target(&r.package, Some(&r.version));
    eprintln!("apt:{spec}: downloading {target} from {}", apt.place());
    let tmp = harness::scratch::tempdir_in(&dest, ".fetch-")?;
    // apt drops to the _apt user to download unless told otherwise; the temporary directory
    // is private to root, so download as root (the file is still checked against apt's index).
    Cmd::new("apt-get", DOWNLOAD)
        .args(&apt.options)
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &target])
        .dir(tmp.path())
        .stdout_to_stderr()
        .run()
        .map_err(|e| {
            Unavailable(format!(
                "apt:{spec}: apt-get download {target} from {} failed: {e}",
                apt.place()
            ))
        })?;
    let got = single_file(tmp.path(), ".deb")?;
    store(&got, "apt")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-cache show` records captured from trixie-backports (7.3.4, split), trimmed to the
    /// fields read and a few others.
    const META_BPO: &str = "\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (7.3.4+1~bpo13+1)
Version: 7.3.4-1~bpo13+1
Installed-Size: 15
Architecture: amd64
Depends: linux-base-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-image-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-modules-cloud-amd64 (= 7.3.4-1~bpo13+1)
Size: 1720

";
    const POINTER_BPO: &str = "\
Package: linux-image-7.3.4+deb13-cloud-amd64
Version: 7.3.4-1~bpo13+1
Installed-Size: 15
Architecture: amd64
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-modules-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)
Pre-Depends: linux-base (>= 4.17~)
Recommends: apparmor
Size: 1928

";
    const BINARY_BPO: &str = "\
Package: linux-binary-7.3.4+deb13-cloud-amd64
Version: 7.3.4-1~bpo13+1
Installed-Size: 13652
Architecture: amd64
Depends: linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)
Size: 13604064
";
    const MODULES_BPO: &str = "\
Package: linux-modules-7.3.4+deb13-cloud-amd64
Version: 7.3.4-1~bpo13+1
Installed-Size: 22958
Architecture: amd64
Depends: kmod, linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)
Size: 22918420
";
    const BASE_BPO: &str = "\
Package: linux-base-7.3.4+deb13-cloud-amd64
Source: linux
Version: 7.3.4-1~bpo13+1
Installed-Size: 1247
Architecture: amd64
Section: kernel
Size: 1025208
";
    /// trixie (6.12.117) and bookworm (6.1.176): one package.
    const ONE_TRIXIE: &str = "\
Package: linux-image-6.12.117+deb13-cloud-amd64
Version: 6.12.117-1
Installed-Size: 34930
Architecture: amd64
Depends: kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Pre-Depends: linux-base (>= 4.12~)
Size: 34671208
";
    const ONE_BOOKWORM: &str = "\
Package: linux-image-6.1.0-50-cloud-amd64
Version: 6.1.176-1
Installed-Size: 105110
Architecture: amd64
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Size: 26484304
";

    #[test]
    fn versioned_names_have_a_release() {
        for n in [
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-binary-7.2.13+deb14-amd64",
            "linux-modules-7.3.4+deb13-cloud-amd64",
            "linux-base-7.3.4+deb13-cloud-amd64",
            "linux-image-6.1.0-50-cloud-amd64",
        ] {
            assert!(versioned(n), "{n}");
        }
        for n in [
            "linux-base",
            "linux-image-cloud-amd64",
            "linux-base-cloud-amd64",
            "linux-modules-cloud-amd64",
            "initramfs-tools",
            "kmod",
            "linux-6.1",
            "firmware-linux-7",
        ] {
            assert!(!versioned(n), "{n}");
        }
    }

    #[test]
    fn records_keep_only_versioned_linux_dependencies() {
        let meta = parse_record(META_BPO).unwrap();
        assert_eq!(meta.package, "linux-image-cloud-amd64");
        assert_eq!(meta.version, "7.3.4-1~bpo13+1");
        assert_eq!(meta.installed_kib, 15);
        assert_eq!(
            meta.links,
            [Link {
                name: "linux-image-7.3.4+deb13-cloud-amd64".into(),
                version: Some("7.3.4-1~bpo13+1".into()),
            }]
        );
        let p = parse_record(POINTER_BPO).unwrap();
        let names: Vec<&str> = p.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linux-base-7.3.4+deb13-cloud-amd64",
                "linux-binary-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64",
            ]
        );
        assert!(parse_record(ONE_TRIXIE).unwrap().links.is_empty());
        assert!(parse_record(ONE_BOOKWORM).unwrap().links.is_empty());
        let two = format!("{BINARY_BPO}\n{BASE_BPO}");
        assert_eq!(
            parse_record(&two).unwrap().package,
            "linux-binary-7.3.4+deb13-cloud-amd64"
        );
        assert_eq!(parse_record("Package: x\n"), None);
    }

    #[test]
    fn the_split_kernel_is_binary_modules_and_base_not_the_pointer() {
        let kind = |t: &str| is_pointer(&parse_record(t).unwrap());
        assert!(kind(POINTER_BPO));
        for content in [BINARY_BPO, MODULES_BPO, BASE_BPO, ONE_TRIXIE, ONE_BOOKWORM] {
            assert!(!kind(content), "{content}");
        }
        // Small but depending on nothing versioned: content (a lone base package).
        let mut base = parse_record(BASE_BPO).unwrap();
        base.installed_kib = 10;
        assert!(!is_pointer(&base));
    }
}
