//! Kernel `.config` parsing: `CONFIG_X=value` lines and `# CONFIG_X is not set`.

use std::collections::BTreeMap;

/// A parsed kernel configuration.
#[derive(Debug, Clone, Default)]
pub struct Kconfig {
    values: BTreeMap<String, String>,
}

impl Kconfig {
    pub fn parse(text: &str) -> Kconfig {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    values.insert(name.trim().to_string(), "n".to_string());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    values.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        Kconfig { values }
    }

    /// The value of `name` (with the `CONFIG_` prefix), `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `name=y`.
    pub fn is_y(&self, name: &str) -> bool {
        self.get(name) == Some("y")
    }

    /// How `name` reads in the file, for evidence: `CONFIG_X=y`, `# CONFIG_X is not set`, or absent.
    pub fn show(&self, name: &str) -> String {
        match self.get(name) {
            Some("n") => format!("# {name} is not set"),
            Some(v) => format!("{name}={v}"),
            None => format!("{name} absent"),
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_set_and_unset() {
        let k = Kconfig::parse("CONFIG_DEBUG_INFO_BTF=y\n# CONFIG_DEBUG_INFO_BTF_MODULES is not set\nCONFIG_LOCALVERSION=\"-x\"\n");
        assert!(k.is_y("CONFIG_DEBUG_INFO_BTF"));
        assert!(!k.is_y("CONFIG_DEBUG_INFO_BTF_MODULES"));
        assert_eq!(
            k.show("CONFIG_DEBUG_INFO_BTF_MODULES"),
            "# CONFIG_DEBUG_INFO_BTF_MODULES is not set"
        );
        assert_eq!(k.get("CONFIG_LOCALVERSION"), Some("-x"));
        assert_eq!(k.show("CONFIG_MODULES"), "CONFIG_MODULES absent");
    }
}
