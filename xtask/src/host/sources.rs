//! The host's apt sources, read (never changed): which Debian mirror and which security
//! archive they name, so that btfgate's own configuration for the suites, and QEMU's install
//! from Debian 12's backports, use the host's mirror, proxies aside, and its keyring.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Unavailable;

/// Debian suite names (codenames and aliases) that mark a host source as a Debian mirror.
const DEBIAN: [&str; 12] = [
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// A Debian mirror the host's apt uses, and the keyring its source names (if a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub uri: String,
    pub signed_by: Option<String>,
}

/// Which archive a source serves: Debian's mirror, or its security archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Main,
    Security,
}

impl Archive {
    /// Whether a source with these suites serves this archive of Debian.
    fn serves<'a>(self, mut suites: impl Iterator<Item = &'a str>) -> bool {
        suites.any(|s| {
            s.ends_with("-security") == (self == Archive::Security)
                && DEBIAN.iter().any(|d| s.split('-').next() == Some(*d))
        })
    }
}

/// A keyring path given as `signed-by`; an inline key (deb822 allows one) is left to apt's
/// trusted keys.
fn keyring(v: &str) -> Option<String> {
    let v = v.trim();
    (v.starts_with('/') && !v.contains(char::is_whitespace)).then(|| v.to_string())
}

/// The first source of `archive` in a one-line-format sources list.
fn archive_in_one_line(text: &str, archive: Archive) -> Option<Mirror> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or(line.strip_prefix("deb\t")) else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((o, r)) => (o, r),
                None => continue,
            },
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if !archive.serves(std::iter::once(suite)) {
            continue;
        }
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .and_then(|v| keyring(v.split(',').next().unwrap_or(v)));
        return Some(Mirror {
            uri: uri.to_string(),
            signed_by,
        });
    }
    None
}

/// The first source of `archive` in a deb822 `.sources` file.
fn archive_in_deb822(text: &str, archive: Archive) -> Option<Mirror> {
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut stanzas = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !stanza.is_empty() {
                stanzas.push(std::mem::take(&mut stanza));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = stanza.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    stanzas.iter().find_map(|s| {
        let field = |k: &str| s.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        if field("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            return None;
        }
        if !field("types")?.split_whitespace().any(|t| t == "deb") {
            return None;
        }
        if !archive.serves(field("suites")?.split_whitespace()) {
            return None;
        }
        let uri = field("uris")?.split_whitespace().next()?;
        Some(Mirror {
            uri: uri.to_string(),
            signed_by: field("signed-by").and_then(keyring),
        })
    })
}

/// The host's source files in apt's order: `sources.list`, then `sources.list.d/` by name.
fn host_source_files(etc: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(etc.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    parts.retain(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"));
    parts.sort();
    let mut files = vec![etc.join("sources.list")];
    files.extend(parts);
    files
}

/// The first source of `archive` the host's apt configuration (under `etc`) names.
fn host_archive(etc: &Path, archive: Archive) -> Option<Mirror> {
    host_source_files(etc).iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        if f.extension().is_some_and(|x| x == "sources") {
            archive_in_deb822(&text, archive)
        } else {
            archive_in_one_line(&text, archive)
        }
    })
}

/// The host's Debian security archive, when its apt configuration names one: the stable
/// suites' `-security` updates (their current kernels) come from there.
pub fn host_security(etc: &Path) -> Option<Mirror> {
    host_archive(etc, Archive::Security)
}

/// The first Debian mirror the host's apt configuration (under `etc`) names.
pub fn host_mirror(etc: &Path) -> Result<Mirror> {
    if let Some(m) = host_archive(etc, Archive::Main) {
        return Ok(m);
    }
    Err(Unavailable(format!(
        "the host's apt configuration names no Debian mirror (no deb source for a Debian suite \
         such as bookworm or trixie in {0}/sources.list or {0}/sources.list.d/): the suites are \
         fetched from the host's own mirror",
        etc.display()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_in_one_line(text: &str) -> Option<Mirror> {
        archive_in_one_line(text, Archive::Main)
    }

    fn main_in_deb822(text: &str) -> Option<Mirror> {
        archive_in_deb822(text, Archive::Main)
    }

    #[test]
    fn the_mirror_comes_from_a_one_line_sources_list() {
        let text = "\
# deb http://old.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib
deb http://later.example/debian trixie main
";
        assert_eq!(
            main_in_one_line(text),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            })
        );
        assert_eq!(
            main_in_one_line("deb http://mirror.example/debian stable-updates main\n")
                .map(|m| m.uri),
            Some("http://mirror.example/debian".into())
        );
        // Not Debian: another distribution, a third-party repository, security only.
        assert_eq!(
            main_in_one_line(
                "deb http://mirror.example/ubuntu jammy main\n\
                 deb https://vendor.example/apt cloud-sdk-bookworm main\n\
                 deb http://mirror.example/debian-security trixie-security main\n"
            ),
            None
        );
    }

    #[test]
    fn the_mirror_comes_from_a_deb822_sources_file() {
        let text = "\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
URIs: http://mirror.example/debian http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
        assert_eq!(
            main_in_deb822(text),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            })
        );
        let inline = "\
Types: deb
URIs: http://mirror.example/debian
Suites: trixie
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGbAAAA=
 -----END PGP PUBLIC KEY BLOCK-----
";
        assert_eq!(
            main_in_deb822(inline),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: None,
            })
        );
        assert_eq!(
            main_in_deb822(
                "Types: deb\nURIs: https://vendor.example/node_20.x\nSuites: nodistro\nComponents: main\n"
            ),
            None
        );
    }

    #[test]
    fn the_host_mirror_is_the_first_in_apt_order_or_a_clear_error() {
        let etc = tempfile::tempdir().unwrap();
        let d = etc.path().join("sources.list.d");
        std::fs::create_dir(&d).unwrap();
        let e = format!("{:#}", host_mirror(etc.path()).unwrap_err());
        assert!(e.contains("names no Debian mirror"), "{e}");
        std::fs::write(
            d.join("b.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("a.list.disabled"),
            "deb http://disabled.example/debian trixie main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("a.list"),
            "deb http://vendor.example/apt cloud-sdk-bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(etc.path()).unwrap().uri,
            "http://mirror.example/debian"
        );
        std::fs::write(
            etc.path().join("sources.list"),
            "deb http://first.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(etc.path()).unwrap().uri,
            "http://first.example/debian"
        );
    }

    /// The security archive is found as the mirror is, and never taken for the mirror.
    #[test]
    fn the_security_archive_is_found_apart_from_the_mirror() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(etc.path().join("sources.list.d")).unwrap();
        std::fs::write(
            etc.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(etc.path()).unwrap().uri,
            "http://mirror.example/debian"
        );
        assert_eq!(
            host_security(etc.path()).map(|m| m.uri).as_deref(),
            Some("http://sec.example/debian-security")
        );
        std::fs::write(
            etc.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(host_security(etc.path()), None);
    }
}
