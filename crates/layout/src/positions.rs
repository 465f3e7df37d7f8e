//! Where attributes are written, as Nix reported them (`unsafeGetAttrPos`),
//! so that a finding about `…partitions.ESP.size` can name a file and a line.

use camino::Utf8PathBuf;
use serde_json::Value;

use crate::findings::{AttrPath, Location};

/// Trees of `{ <attr> = { at = { file, line, column } | null; below = <tree> | null; }; }`,
/// one per evaluated file.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    trees: Vec<Value>,
}

impl Positions {
    pub fn new(trees: Vec<Value>) -> Self {
        Positions { trees }
    }

    /// The position of `path`, or of its nearest ancestor Nix knows about.
    pub fn locate(&self, path: &AttrPath) -> Option<Location> {
        self.trees.iter().find_map(|tree| locate_in(tree, path))
    }
}

fn locate_in(tree: &Value, path: &AttrPath) -> Option<Location> {
    let mut level = tree;
    let mut best = None;
    for segment in path.segments() {
        let Some(node) = level.get(segment) else {
            break;
        };
        if let Some(location) = node.get("at").and_then(parse_location) {
            best = Some(location);
        }
        match node.get("below") {
            Some(below) if below.is_object() => level = below,
            _ => break,
        }
    }
    best
}

fn parse_location(at: &Value) -> Option<Location> {
    Some(Location {
        file: Utf8PathBuf::from(at.get("file")?.as_str()?),
        line: u32::try_from(at.get("line")?.as_u64()?).ok()?,
        column: u32::try_from(at.get("column")?.as_u64()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_nearest_known_ancestor() {
        let tree = json!({
            "disko": { "at": { "file": "/x/disko.nix", "line": 3, "column": 1 }, "below": {
                "devices": { "at": null, "below": {
                    "size": { "at": { "file": "/x/disko.nix", "line": 9, "column": 5 }, "below": null }
                }}
            }}
        });
        let positions = Positions::new(vec![tree]);
        let size = positions
            .locate(&AttrPath::new(["disko", "devices", "size"]))
            .unwrap();
        assert_eq!((size.line, size.column), (9, 5));
        let unknown = positions
            .locate(&AttrPath::new(["disko", "devices", "nothing", "deeper"]))
            .unwrap();
        assert_eq!(unknown.line, 3);
        assert!(positions.locate(&AttrPath::new(["elsewhere"])).is_none());
    }
}
