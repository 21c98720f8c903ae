//! What the mount knows of the namespace: inode numbers for the places it has
//! seen (the account, containers, objects, `a/b/` pseudo-directories), their
//! attributes, and briefly cached directory listings. Pure bookkeeping: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use crate::client::Listed;

pub const ROOT: u64 = 1;

/// A directory's children as readdir shows them: name, inode, kind.
pub type DirEntries = Vec<(String, u64, Kind)>;

/// Where a node lives in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// The account: its containers are the directories.
    Account,
    Container(String),
    /// An object, or a pseudo-directory (`key` without its trailing `/`).
    Object {
        container: String,
        key: String,
    },
}

impl Place {
    /// The place of `name` in this directory.
    pub fn child(&self, name: &str) -> Place {
        match self {
            Place::Account => Place::Container(name.to_owned()),
            Place::Container(container) => Place::Object {
                container: container.clone(),
                key: name.to_owned(),
            },
            Place::Object { container, key } => Place::Object {
                container: container.clone(),
                key: format!("{key}/{name}"),
            },
        }
    }

    /// The container and prefix that list this place as a directory.
    pub fn listing(&self) -> (Option<&str>, String) {
        match self {
            Place::Account => (None, String::new()),
            Place::Container(container) => (Some(container), String::new()),
            Place::Object { container, key } => (Some(container), format!("{key}/")),
        }
    }

    /// Container and key, for places that can be objects.
    pub fn object(&self) -> Option<(&str, &str)> {
        match self {
            Place::Object { container, key } => Some((container, key)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub place: Place,
    pub kind: Kind,
    pub size: u64,
    pub modified: SystemTime,
    /// Created here and not uploaded yet: listings do not show it, but it
    /// must stay visible.
    pub pending: bool,
}

/// A directory's children as of `fetched`.
struct Listing {
    fetched: Instant,
    children: BTreeMap<String, u64>,
}

/// A child as a listing describes it, before it has an inode.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub modified: SystemTime,
}

pub struct Tree {
    nodes: HashMap<u64, Node>,
    by_place: HashMap<Place, u64>,
    listings: HashMap<u64, Listing>,
    next_ino: u64,
    listing_ttl: Duration,
}

impl Tree {
    pub fn new(root: Place, listing_ttl: Duration) -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            by_place: HashMap::new(),
            listings: HashMap::new(),
            next_ino: ROOT + 1,
            listing_ttl,
        };
        tree.by_place.insert(root.clone(), ROOT);
        tree.nodes.insert(
            ROOT,
            Node {
                place: root,
                kind: Kind::Directory,
                size: 0,
                modified: SystemTime::now(),
                pending: false,
            },
        );
        tree
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn node_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inode of `place`, made or updated with what the store says of it.
    pub fn intern(&mut self, place: Place, child: &Child) -> u64 {
        if let Some(&ino) = self.by_place.get(&place)
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            // A file being written here keeps its local size until uploaded.
            if !node.pending {
                node.kind = child.kind;
                node.size = child.size;
                node.modified = child.modified;
            }
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_place.insert(place.clone(), ino);
        self.nodes.insert(
            ino,
            Node {
                place,
                kind: child.kind,
                size: child.size,
                modified: child.modified,
                pending: false,
            },
        );
        ino
    }

    /// The children of `dir` if its listing is fresh: Some(None) when the
    /// name is absent, None when the listing must be fetched.
    pub fn cached_child(&self, dir: u64, name: &str, now: Instant) -> Option<Option<u64>> {
        let listing = self.fresh_listing(dir, now)?;
        Some(listing.children.get(name).copied())
    }

    /// The children of `dir` (name, inode, kind) if its listing is fresh.
    pub fn cached_children(&self, dir: u64, now: Instant) -> Option<DirEntries> {
        let listing = self.fresh_listing(dir, now)?;
        Some(
            listing
                .children
                .iter()
                .filter_map(|(name, &ino)| Some((name.clone(), ino, self.nodes.get(&ino)?.kind)))
                .collect(),
        )
    }

    fn fresh_listing(&self, dir: u64, now: Instant) -> Option<&Listing> {
        self.listings
            .get(&dir)
            .filter(|listing| now.duration_since(listing.fetched) < self.listing_ttl)
    }

    /// Installs the complete listing of `dir` fetched at `fetched`; files
    /// created here and not uploaded yet stay.
    pub fn install_listing(&mut self, dir: u64, children: Vec<Child>, fetched: Instant) {
        let Some(dir_place) = self.nodes.get(&dir).map(|node| node.place.clone()) else {
            return;
        };
        let mut names = BTreeMap::new();
        for child in children {
            let ino = self.intern(dir_place.child(&child.name), &child);
            names.insert(child.name, ino);
        }
        if let Some(old) = self.listings.remove(&dir) {
            for (name, ino) in old.children {
                if self.nodes.get(&ino).is_some_and(|node| node.pending) {
                    names.entry(name).or_insert(ino);
                }
            }
        }
        self.listings.insert(
            dir,
            Listing {
                fetched,
                children: names,
            },
        );
    }

    /// Records a child made here (or found by a lookup) in `dir`'s listing,
    /// if one is cached.
    pub fn add_child(&mut self, dir: u64, name: &str, ino: u64) {
        if let Some(listing) = self.listings.get_mut(&dir) {
            listing.children.insert(name.to_owned(), ino);
        }
    }

    /// Forgets `name` in `dir`: its place no longer names an inode.
    pub fn remove_child(&mut self, dir: u64, name: &str) {
        if let Some(listing) = self.listings.get_mut(&dir) {
            listing.children.remove(name);
        }
        if let Some(place) = self.nodes.get(&dir).map(|node| node.place.child(name))
            && let Some(ino) = self.by_place.remove(&place)
        {
            self.listings.remove(&ino);
        }
    }

    /// Moves file `ino` to `name` in `dir` after the store has.
    pub fn move_file(&mut self, ino: u64, from: (u64, &str), to: (u64, &str)) {
        self.remove_child(from.0, from.1);
        self.remove_child(to.0, to.1);
        let Some(place) = self.nodes.get(&to.0).map(|node| node.place.child(to.1)) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.place = place.clone();
        }
        self.by_place.insert(place, ino);
        self.add_child(to.0, to.1, ino);
    }

    /// Marks `dir` as freshly listed with no children (a directory just made).
    pub fn mark_empty(&mut self, dir: u64, now: Instant) {
        self.listings.insert(
            dir,
            Listing {
                fetched: now,
                children: BTreeMap::new(),
            },
        );
    }
}

/// Longest name one directory entry can have on Linux (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The children a listing of `prefix` shows: rolled-up prefixes are
/// directories, objects are files. Names a file system cannot show (empty,
/// `.`, `..`, holding a `/` from a doubled slash, longer than `NAME_MAX`
/// bytes) are left out, and a name that is both a file and a directory
/// shows as the directory.
pub fn children_of(listed: Vec<Listed>, prefix: &str, containers: bool) -> Vec<Child> {
    let mut children: BTreeMap<String, Child> = BTreeMap::new();
    for entry in listed {
        let (name, kind) = if containers {
            (entry.name.as_str(), Kind::Directory)
        } else {
            let Some(rest) = entry.name.strip_prefix(prefix) else {
                continue;
            };
            match rest.strip_suffix('/') {
                Some(dir) if entry.rolled_up => (dir, Kind::Directory),
                Some(_) => continue,
                None => (rest, Kind::File),
            }
        };
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.len() > NAME_MAX
        {
            continue;
        }
        if kind == Kind::File && children.contains_key(name) {
            continue;
        }
        children.insert(
            name.to_owned(),
            Child {
                name: name.to_owned(),
                kind,
                size: entry.size,
                modified: entry.modified,
            },
        );
    }
    children.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, rolled_up: bool) -> Listed {
        Listed {
            name: name.to_owned(),
            rolled_up,
            size: 3,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_listing_shows_files_and_directories_and_skips_unshowable_names() {
        let children = children_of(
            vec![
                listed("a/", false),
                listed("a/b", true),
                listed("a/b/", true),
                listed("a/c.txt", false),
                listed("a//", true),
                listed("a/..", false),
                listed("a/d", false),
                listed("a/d/", true),
                listed(&format!("a/{}", "x".repeat(256)), false),
            ],
            "a/",
            false,
        );
        let shown: Vec<(&str, Kind)> = children
            .iter()
            .map(|child| (child.name.as_str(), child.kind))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("b", Kind::Directory),
                ("c.txt", Kind::File),
                ("d", Kind::Directory)
            ]
        );
    }

    #[test]
    fn places_nest_keys_under_their_container() {
        let place = Place::Account.child("photos").child("2026").child("a.jpg");
        assert_eq!(
            place.object(),
            Some(("photos", "2026/a.jpg")),
            "account → container → key"
        );
        assert_eq!(place.listing(), (Some("photos"), "2026/a.jpg/".to_owned()));
    }

    #[test]
    fn a_stale_listing_is_not_used_and_pending_files_survive_a_refresh() {
        let mut tree = Tree::new(Place::Container("c".into()), Duration::from_secs(1));
        let start = Instant::now();
        let file = Child {
            name: "new.txt".into(),
            kind: Kind::File,
            size: 0,
            modified: SystemTime::UNIX_EPOCH,
        };
        tree.install_listing(ROOT, vec![], start);
        let ino = tree.intern(Place::Container("c".into()).child("new.txt"), &file);
        if let Some(node) = tree.node_mut(ino) {
            node.pending = true;
        }
        tree.add_child(ROOT, "new.txt", ino);
        assert_eq!(tree.cached_child(ROOT, "new.txt", start), Some(Some(ino)));
        assert_eq!(
            tree.cached_child(ROOT, "new.txt", start + Duration::from_secs(2)),
            None
        );
        tree.install_listing(ROOT, vec![], start + Duration::from_secs(2));
        assert_eq!(
            tree.cached_child(ROOT, "new.txt", start + Duration::from_secs(2)),
            Some(Some(ino))
        );
        tree.remove_child(ROOT, "new.txt");
        assert_eq!(
            tree.cached_child(ROOT, "new.txt", start + Duration::from_secs(2)),
            Some(None)
        );
    }
}
