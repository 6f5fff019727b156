//! What an `apt:` spec names (`NAME`, `NAME@previous`, `NAME@SUITE`) and btfgate's own apt
//! configuration for the Debian suites, kept apart from the host's: under
//! `<cache>/apt/suites/`, `etc/sources.list` (one `deb` line per suite, component `main`, the
//! mirror the host's own apt configuration names), `state/` (the lists), `cache/` (apt's
//! package cache), `lock` (flock: one `apt-get update` at a time) and `updated` (the sources
//! list the lists were last updated with). apt runs with `Dir::Etc::SourceList`,
//! `Dir::State` and `Dir::Cache` pointing there and no preferences, so it needs no root and
//! leaves the host's configuration and lists alone; the host's trusted keys and apt.conf.d
//! (proxies) still apply, and apt verifies the signed Release files as usual.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use harness::paths::cache_dir;
use harness::process::Cmd;

use super::Unavailable;
use crate::host::sources::{host_mirror, host_security, Mirror};

/// The suites `NAME@SUITE` may name.
pub const SUITES: [&str; 5] = [
    "bookworm",
    "bookworm-backports",
    "trixie",
    "trixie-backports",
    "sid",
];

/// Lists younger than this are not updated again (a new process within the hour after another
/// one sees the same kernels; the archive publishes a few times a day). A lookup that finds
/// nothing in fresh lists still updates them once.
const FRESH: Duration = Duration::from_secs(6 * 60 * 60);
/// Deadline of `apt-get update` for the five suites (about 30 MB of `Packages` files).
const REFRESH: Duration = Duration::from_secs(10 * 60);

/// Where an `apt:` spec's packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The host's apt, the candidate version.
    Host,
    /// The host's apt, the kernel ABI before the meta package's.
    Previous,
    /// btfgate's own apt configuration, this suite.
    Suite(&'static str),
}

/// An `apt:` spec: a package name and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub at: At,
}

/// Parses what follows `apt:`: `NAME`, `NAME@previous` or `NAME@SUITE`.
pub fn parse(spec: &str) -> Result<Spec> {
    let (name, at) = match spec.split_once('@') {
        None => (spec, At::Host),
        Some((name, "previous")) => (name, At::Previous),
        Some((name, suite)) => match SUITES.iter().find(|s| **s == suite) {
            Some(s) => (name, At::Suite(s)),
            None => bail!(
                "apt:{spec}: unknown suite {suite:?} (expected previous or one of {})",
                SUITES.join(", ")
            ),
        },
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid {
        bail!("apt:{spec}: {name:?} is not a Debian package name");
    }
    Ok(Spec {
        name: name.to_string(),
        at,
    })
}

/// The stable suites, whose kernels are updated in `<suite>-updates` (point releases) and
/// `<suite>-security` (the security archive): without them `@bookworm` would be an older
/// kernel than the host's own bookworm apt gives.
pub const STABLE: [&str; 2] = ["bookworm", "trixie"];

/// btfgate's sources list: one `deb` line per suite, component `main`, only the `Packages`
/// index (no translations or AppStream data); for the stable suites also their `-updates`
/// and, when the host names a security archive, their `-security` suites.
pub fn sources_list(m: &Mirror, security: Option<&Mirror>) -> String {
    let line = |m: &Mirror, suite: &str| {
        let mut options = vec!["arch=amd64".to_string(), "target=Packages".to_string()];
        if let Some(k) = &m.signed_by {
            options.push(format!("signed-by={k}"));
        }
        format!("deb [{}] {} {suite} main\n", options.join(" "), m.uri)
    };
    let mut out = String::from(
        "# Written by btfgate (cargo xtask fetch apt NAME@SUITE) from the host's apt sources.\n",
    );
    for s in SUITES {
        out.push_str(&line(m, s));
    }
    for s in STABLE {
        out.push_str(&line(m, &format!("{s}-updates")));
        if let Some(sec) = security {
            out.push_str(&line(sec, &format!("{s}-security")));
        }
    }
    out
}

/// btfgate's apt configuration for the suites, rooted at `root`.
pub struct Config {
    root: PathBuf,
}

/// What this process did about the suites' lists.
enum Lists {
    Updated,
    Fresh,
    Failed(String),
}

static LISTS: Mutex<Option<Lists>> = Mutex::new(None);

impl Config {
    /// The configuration under `<cache>/apt/suites/`.
    pub fn suites() -> Config {
        Config {
            root: cache_dir().join("apt").join("suites"),
        }
    }

    fn sources(&self) -> PathBuf {
        self.root.join("etc").join("sources.list")
    }

    /// apt's options for this configuration.
    pub fn options(&self) -> Vec<String> {
        let dir = |p: PathBuf| p.display().to_string();
        [
            format!("Dir::Etc::SourceList={}", dir(self.sources())),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State={}", dir(self.root.join("state"))),
            format!("Dir::Cache={}", dir(self.root.join("cache"))),
            // A host may switch apt's binary caches off (Docker images do); in this private
            // directory they save rebuilding them from the five suites' lists at every query.
            "Dir::Cache::pkgcache=pkgcache.bin".into(),
            "Dir::Cache::srcpkgcache=srcpkgcache.bin".into(),
            "Dir::Etc::Preferences=/dev/null".into(),
            "Dir::Etc::PreferencesParts=/dev/null".into(),
            "APT::Architecture=amd64".into(),
            // The cache usually lives in root's home, which apt's _apt user cannot enter; the
            // downloads are still checked against the signed index.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// Makes the lists usable: writes the sources list and updates the lists unless this
    /// process did already or they are younger than [`FRESH`] and of the same sources.
    /// `again`: update even fresh lists (a lookup found nothing), once per process. Returns
    /// whether the lists were updated by this call.
    pub fn ready(&self, again: bool) -> Result<bool> {
        let mut state = LISTS
            .lock()
            .map_err(|_| anyhow::anyhow!("the suites' lists state is poisoned"))?;
        match &*state {
            Some(Lists::Failed(m)) => return Err(Unavailable(m.clone()).into()),
            Some(Lists::Updated) => return Ok(false),
            Some(Lists::Fresh) if !again => return Ok(false),
            _ => {}
        }
        let outcome = self.update(again);
        *state = Some(match &outcome {
            Ok(true) => Lists::Updated,
            Ok(false) => Lists::Fresh,
            Err(e) => Lists::Failed(format!("{e:#}")),
        });
        outcome
    }

    /// Under the lock: the sources list, and `apt-get update` unless fresh (and not `force`).
    fn update(&self, force: bool) -> Result<bool> {
        for d in [
            self.root.join("etc"),
            self.root.join("state").join("lists").join("partial"),
            self.root.join("cache").join("archives").join("partial"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        let _lock = self.lock()?;
        let etc = Path::new("/etc/apt");
        let sources = sources_list(&host_mirror(etc)?, host_security(etc).as_ref());
        if std::fs::read_to_string(self.sources()).ok().as_deref() != Some(sources.as_str()) {
            harness::atomic::write(&self.sources(), sources.as_bytes())
                .context("write the suites' sources list")?;
        }
        let stamp = self.root.join("updated");
        let fresh = std::fs::read_to_string(&stamp).is_ok_and(|s| s == sources)
            && std::fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < FRESH);
        if fresh && !force {
            return Ok(false);
        }
        let cmd = Cmd::new("apt-get", REFRESH)
            .args(self.options())
            .args(["update", "-qq"]);
        eprintln!(
            "updating btfgate's apt lists of {} ({})",
            SUITES.join(", "),
            self.root.display()
        );
        cmd.stdout_to_stderr().run().map_err(|e| {
            Unavailable(format!(
                "apt-get update for the suites {} failed: {e}",
                SUITES.join(", ")
            ))
        })?;
        harness::atomic::write(&stamp, sources.as_bytes()).context("stamp the suites' lists")?;
        Ok(true)
    }

    /// An exclusive flock on `<root>/lock`, waiting at most as long as an update may take.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let deadline = Instant::now() + REFRESH;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Unavailable(format!(
                        "lock {}: another process has held it for more than {} s",
                        path.display(),
                        REFRESH.as_secs()
                    ))
                    .into())
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("lock {}", path.display()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_the_host_the_previous_abi_or_a_suite() {
        let p = parse("linux-image-cloud-amd64").unwrap();
        assert_eq!(
            (p.name.as_str(), p.at),
            ("linux-image-cloud-amd64", At::Host)
        );
        let p = parse("linux-image-cloud-amd64@previous").unwrap();
        assert_eq!(p.at, At::Previous);
        let p = parse("linux-image-7.3.4+deb13-cloud-amd64@trixie-backports").unwrap();
        assert_eq!(p.name, "linux-image-7.3.4+deb13-cloud-amd64");
        assert_eq!(p.at, At::Suite("trixie-backports"));
        for s in SUITES {
            assert_eq!(parse(&format!("x@{s}")).unwrap().at, At::Suite(s));
        }
    }

    #[test]
    fn an_unknown_suite_is_refused_naming_the_known_ones() {
        let e = format!("{:#}", parse("linux-image-amd64@forky").unwrap_err());
        assert!(e.contains("apt:linux-image-amd64@forky"), "{e}");
        assert!(e.contains("\"forky\""), "{e}");
        for s in SUITES {
            assert!(e.contains(s), "{e}");
        }
        assert!(parse("@sid").is_err());
        assert!(parse("a b@sid").is_err());
    }

    #[test]
    fn the_sources_list_has_one_line_per_suite() {
        let m = Mirror {
            uri: "http://mirror.example/debian".into(),
            signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
        };
        let text = sources_list(&m, None);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-backports main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie-backports main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian sid main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-updates main",
                "deb [arch=amd64 target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie-updates main",
            ]
        );
        // With the host's security archive, the stable suites get their security updates.
        let sec = Mirror {
            uri: "http://security.example/debian-security".into(),
            signed_by: None,
        };
        let with = sources_list(&m, Some(&sec));
        for s in ["bookworm", "trixie"] {
            assert!(
                with.contains(&format!(
                    "deb [arch=amd64 target=Packages] http://security.example/debian-security {s}-security main\n"
                )),
                "{with}"
            );
        }
        let plain = sources_list(
            &Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: None,
            },
            None,
        );
        assert!(plain
            .contains("deb [arch=amd64 target=Packages] http://mirror.example/debian sid main\n"));
        // Read back as a host's sources list, it names the same mirror.
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("sources.list"), &text).unwrap();
        assert_eq!(host_mirror(etc.path()).unwrap(), m);
    }
}
