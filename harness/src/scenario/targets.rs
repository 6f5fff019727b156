//! Resolving a target to a package on this machine, or to the reason it cannot run here
//! (decided when trials are listed).

use crate::Error;
use std::path::{Path, PathBuf};

use super::model::{Source, TargetsFile};
use crate::package::ReadOptions;
use crate::paths::cache_dir;

/// A target's package, ready to read.
#[derive(Debug, Clone)]
pub enum Package {
    /// One package, or the packages of one kernel split over several (read as one set).
    Files(Vec<PathBuf>),
    /// Kernel image and config of `boot`, modules of `modules`.
    Mix { boot: Part, modules: Part },
}

/// One part of a mix: a package file and the options it is read with (its own target's: a
/// built package trusts the build key, a fetched one the system's keys).
pub use crate::package::Part;

/// The host distribution family (`/etc/os-release` ID and ID_LIKE).
pub fn host_is(id: &str) -> bool {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
        .any(|v| v.trim_matches('"').split_whitespace().any(|x| x == id))
}

pub use crate::paths::fetched_marker;

/// The package or set of packages `cargo xtask fetch` recorded for `name` (one path a line).
fn fetched(name: &str, how: &str) -> crate::Result<Vec<PathBuf>> {
    let m = fetched_marker(name);
    let text = std::fs::read_to_string(&m)
        .map_err(|_| Error::failed("target", format!("{name} is not fetched (run `cargo xtask fetch {how} {name}`; `cargo xtask test` does)")))?;
    let paths: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return Err(Error::bad(&m, "fetch marker", "names no package"));
    }
    if let Some(gone) = paths.iter().find(|p| !p.is_file()) {
        return Err(Error::bad(
            &m,
            "fetch marker",
            format!("names {}, which is gone", gone.display()),
        ));
    }
    Ok(paths)
}

/// Resolves target `name`, or says why it cannot run on this machine.
pub fn resolve(targets: &TargetsFile, name: &str) -> crate::Result<Package> {
    resolve_in(targets, name, &cache_dir())
}

/// [`resolve`] with built packages looked up in the cache `cache`.
fn resolve_in(targets: &TargetsFile, name: &str, cache: &Path) -> crate::Result<Package> {
    let t = targets
        .targets
        .get(name)
        .ok_or_else(|| Error::failed("target", format!("unknown target {name:?}")))?;
    match &t.source {
        Source::Apt(pkg) => {
            if !host_is("debian") {
                return Err(Error::failed(
                    "target",
                    format!("{name}: apt sources need a Debian host"),
                ));
            }
            fetched(pkg, "apt").map(Package::Files)
        }
        Source::Apk(pkg) => {
            if !host_is("alpine") {
                return Err(Error::failed(
                    "target",
                    format!("{name}: apk sources need an Alpine host"),
                ));
            }
            fetched(pkg, "apk").map(Package::Files)
        }
        Source::File(p) => {
            if p.exists() {
                Ok(Package::Files(vec![p.clone()]))
            } else {
                Err(Error::failed(
                    "target",
                    format!("{name}: {} does not exist", p.display()),
                ))
            }
        }
        Source::Build(spec) | Source::BuildUnstripped(spec) => {
            let out = spec.outputs_in(cache)?;
            if !out.complete() {
                return Err(Error::failed(
                    "target",
                    format!(
                        "{name}: not built yet ({}; `cargo xtask test` builds every build target)",
                        build_command(spec)
                    ),
                ));
            }
            Ok(Package::Files(vec![
                if matches!(t.source, Source::Build(_)) {
                    out.stripped
                } else {
                    out.unstripped
                },
            ]))
        }
        Source::Mix(mix) => {
            let one = |n: &str| match resolve_in(targets, n, cache)? {
                Package::Files(paths) => match <[PathBuf; 1]>::try_from(paths) {
                    Ok([path]) => Ok(Part {
                        path,
                        read: read_options(targets, n),
                    }),
                    Err(_) => Err(Error::failed(
                        "target",
                        format!("{name}: a mix takes single packages, and {n} is a set"),
                    )),
                },
                Package::Mix { .. } => Err(Error::failed(
                    "target",
                    format!("{name}: a mix cannot take parts from another mix ({n})"),
                )),
            };
            Ok(Package::Mix {
                boot: one(&mix.boot)?,
                modules: one(&mix.modules)?,
            })
        }
    }
}

/// The `cargo xtask build` command line that builds `spec`.
fn build_command(spec: &crate::build::BuildSpec) -> String {
    let mut c = format!("cargo xtask build --base {}", spec.base);
    for f in &spec.fragments {
        c.push_str(&format!(" --fragment {}", f.display()));
    }
    c.push_str(if spec.btf { " --btf on" } else { " --btf off" });
    for f in &spec.overrides {
        c.push_str(&format!(" --override {}", f.display()));
    }
    c.push_str(&format!(" --flavor {}", spec.flavor));
    if spec.source != Path::new("/usr/src/linux-source-6.1.tar.xz") {
        c.push_str(&format!(" --source {}", spec.source.display()));
    }
    c
}

/// Read options for a target: built packages are signed with btfgate's build key. A mix is
/// read as the directory [`Package::materialize`] assembles (each part was read with its own
/// options, [`Part::read`]), so it takes the defaults.
pub fn read_options(targets: &TargetsFile, name: &str) -> ReadOptions {
    match targets.targets.get(name).map(|t| &t.source) {
        Some(Source::Build(_) | Source::BuildUnstripped(_)) => ReadOptions {
            keys_dir: crate::build::trusted_keys_dir(),
            allow_untrusted: false,
        },
        _ => ReadOptions::default(),
    }
}

impl Package {
    /// The packages to read, with `read` (the target's [`read_options`]): the package or set
    /// itself, or the mix assembled once into the cache (each part extracted with its own read
    /// options).
    pub fn materialize(&self, read: &ReadOptions) -> crate::Result<Vec<Part>> {
        let part = |path: PathBuf| Part {
            path,
            read: read.clone(),
        };
        match self {
            Package::Files(paths) => Ok(paths.iter().cloned().map(part).collect()),
            Package::Mix { boot, modules } => {
                use sha2::{Digest, Sha256};
                let key = hex::encode(Sha256::digest(
                    format!("{}\n{}", boot.path.display(), modules.path.display()).as_bytes(),
                ));
                let dir = cache_dir().join("mix").join(&key[..24]);
                if dir.join(".complete").is_file() {
                    return Ok(vec![part(dir)]);
                }
                let parent = dir
                    .parent()
                    .ok_or_else(|| Error::failed("mix", "cache path has no parent"))?;
                fn io(p: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
                    move |e| Error::io(p, "mix", e)
                }
                std::fs::create_dir_all(parent).map_err(io(parent))?;
                let tmp = crate::scratch::tempdir_in(parent, ".mix-").map_err(io(parent))?;
                let in_boot = |p: &Path| p.starts_with("boot");
                let in_mods =
                    |p: &Path| p.starts_with("lib/modules") || p.starts_with("usr/lib/modules");
                crate::package::extract::extract(&boot.path, &boot.read, tmp.path(), &in_boot)?;
                crate::package::extract::extract(
                    &modules.path,
                    &modules.read,
                    tmp.path(),
                    &in_mods,
                )?;
                std::fs::write(tmp.path().join(".complete"), b"").map_err(io(tmp.path()))?;
                tmp.rename_into_place(&dir).map_err(io(&dir))?;
                Ok(vec![part(dir)])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load::parse_targets;

    /// A targets file with two builds (of the tarball `source`), a file target and mixes of them.
    fn targets(source: &Path, file: &Path) -> TargetsFile {
        let (s, f) = (source.display(), file.display());
        let text = format!(
            "targets:
  a:
    source:
      build: {{ source: {s}, fragments: [common.config], btf: true, flavor: a }}
  b:
    source:
      build: {{ source: {s}, fragments: [common.config, core.config], btf: true, flavor: b }}
  f:
    source:
      file: {f}
  ab:
    source:
      mix: {{ boot: a, modules: b }}
  fb:
    source:
      mix: {{ boot: f, modules: b }}
  mm:
    source:
      mix: {{ boot: ab, modules: b }}
"
        );
        parse_targets(Path::new("targets.yaml"), &text).unwrap()
    }

    /// Makes the outputs of build target `name` look complete in `cache`.
    fn fake_build(t: &TargetsFile, name: &str, cache: &Path) -> PathBuf {
        let Source::Build(spec) = &t.targets[name].source else {
            panic!("{name} is not a build");
        };
        let out = spec.outputs_in(cache).unwrap();
        std::fs::create_dir_all(&out.dir).unwrap();
        for f in [&out.stripped, &out.unstripped, &out.record] {
            std::fs::write(f, b"").unwrap();
        }
        out.stripped
    }

    /// (keys dir, allow untrusted) of `o`.
    fn trust(o: &ReadOptions) -> (PathBuf, bool) {
        (o.keys_dir.clone(), o.allow_untrusted)
    }

    fn build_trust() -> (PathBuf, bool) {
        (crate::build::trusted_keys_dir(), false)
    }

    fn default_trust() -> (PathBuf, bool) {
        trust(&ReadOptions::default())
    }

    #[test]
    fn mix_of_two_builds_reads_each_with_the_build_key() {
        let d = tempfile::tempdir().unwrap();
        let (src, file) = (d.path().join("linux.tar.xz"), d.path().join("f.apk"));
        std::fs::write(&src, b"source").unwrap();
        std::fs::write(&file, b"package").unwrap();
        let t = targets(&src, &file);
        let cache = d.path().join("cache");
        let err = resolve_in(&t, "ab", &cache).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "target: a: not built yet (cargo xtask build --base tinyconfig --fragment common.config --btf on --flavor a --source {};",
                src.display()
            )),
            "{err}"
        );
        let (a, b) = (fake_build(&t, "a", &cache), fake_build(&t, "b", &cache));
        assert_ne!(a, b);
        let Package::Mix { boot, modules } = resolve_in(&t, "ab", &cache).unwrap() else {
            panic!("ab is not a mix");
        };
        assert_eq!((boot.path, modules.path), (a, b.clone()));
        assert_eq!(trust(&boot.read), build_trust());
        assert_eq!(trust(&modules.read), build_trust());
        // A part that is not built keeps the default trust; the mix itself is a directory.
        let Package::Mix { boot, modules } = resolve_in(&t, "fb", &cache).unwrap() else {
            panic!("fb is not a mix");
        };
        assert_eq!((boot.path, trust(&boot.read)), (file, default_trust()));
        assert_eq!((modules.path, trust(&modules.read)), (b, build_trust()));
        assert_eq!(trust(&read_options(&t, "ab")), default_trust());
        let err = resolve_in(&t, "mm", &cache).unwrap_err().to_string();
        assert!(
            err.contains("cannot take parts from another mix (ab)"),
            "{err}"
        );
    }
}
