//! What the mount knows of the namespace: inode numbers for the places it has
//! seen (the account, containers, objects, `a/b/` pseudo-directories), their
//! attributes, and briefly cached directory listings. Pure bookkeeping: no I/O.
//!
//! A node is kept while the kernel holds it (each entry replied counts one
//! lookup, each `forget` takes them back), while a cached listing shows it,
//! or while it is a file written here and not uploaded yet; stale listings
//! are dropped as new ones come. So what the mount holds follows what the
//! kernel caches and what was listed lately, not everything ever seen.

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
    /// Written here since its last upload: a listing's size and time are
    /// older than the writer's (an append must not go back to the stored
    /// end of the file).
    pub unsaved: bool,
    /// Removed or replaced while open: what its writers still write goes
    /// nowhere, as with an unlinked file (uploading it would bring the name
    /// back, or overwrite what replaced it).
    pub unlinked: bool,
    /// Lookups the kernel holds (entries replied, less those forgotten).
    kernel_refs: u64,
    /// Cached listings that show it.
    listing_refs: u32,
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
    /// Listings installed since stale ones were last dropped.
    installs_since_sweep: u32,
}

/// Listings installed between two sweeps of the stale ones.
const SWEEP_EVERY: u32 = 64;

impl Tree {
    pub fn new(root: Place, listing_ttl: Duration) -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            by_place: HashMap::new(),
            listings: HashMap::new(),
            next_ino: ROOT + 1,
            listing_ttl,
            installs_since_sweep: 0,
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
                unsaved: false,
                unlinked: false,
                kernel_refs: 0,
                listing_refs: 0,
            },
        );
        tree
    }

    /// How many nodes are known (the root included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The kernel was handed `ino` in an entry: it holds one more lookup.
    pub fn looked_up(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.kernel_refs += 1;
        }
    }

    /// `ino` was made here and did not reach the store: it is no longer
    /// shown as still to come, nor kept for it.
    pub fn abandon_pending(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino)
            && node.pending
        {
            node.pending = false;
            self.release(vec![ino]);
        }
    }

    /// The kernel let go of `lookups` of `ino`.
    pub fn forget(&mut self, ino: u64, lookups: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.kernel_refs = node.kernel_refs.saturating_sub(lookups);
            self.release(vec![ino]);
        }
    }

    /// Drops the nodes in `candidates` that nothing holds any more, with
    /// the listings of those that are directories (whose children may then
    /// go too).
    fn release(&mut self, mut candidates: Vec<u64>) {
        while let Some(ino) = candidates.pop() {
            let unheld = self.nodes.get(&ino).is_some_and(|node| {
                node.kernel_refs == 0 && node.listing_refs == 0 && !node.pending
            });
            if ino == ROOT || !unheld {
                continue;
            }
            if let Some(node) = self.nodes.remove(&ino)
                && self.by_place.get(&node.place) == Some(&ino)
            {
                self.by_place.remove(&node.place);
            }
            candidates.extend(self.drop_listing(ino));
        }
    }

    /// Drops `dir`'s cached listing, if any; hands back the children it
    /// showed, to be released.
    fn drop_listing(&mut self, dir: u64) -> Vec<u64> {
        match self.listings.remove(&dir) {
            Some(listing) => self.unlist(listing.children.into_values()),
            None => Vec::new(),
        }
    }

    /// Counts one listing fewer showing each of `children`; hands them back.
    fn unlist(&mut self, children: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let children: Vec<u64> = children.into_iter().collect();
        for ino in &children {
            if let Some(node) = self.nodes.get_mut(ino) {
                node.listing_refs = node.listing_refs.saturating_sub(1);
            }
        }
        children
    }

    fn list(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.listing_refs += 1;
        }
    }

    /// Replaces `dir`'s listing, releasing what only the old one held.
    fn set_listing(&mut self, dir: u64, listing: Listing) {
        for ino in listing.children.values() {
            self.list(*ino);
        }
        if let Some(old) = self.listings.insert(dir, listing) {
            let released = self.unlist(old.children.into_values());
            self.release(released);
        }
    }

    /// Drops the listings that are no longer fresh (those showing a file
    /// not uploaded yet stay: a refresh carries it over).
    fn sweep_stale_listings(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .listings
            .iter()
            .filter(|(_, listing)| now.duration_since(listing.fetched) >= self.listing_ttl)
            .filter(|(_, listing)| {
                !listing
                    .children
                    .values()
                    .any(|ino| self.nodes.get(ino).is_some_and(|node| node.pending))
            })
            .map(|(dir, _)| *dir)
            .collect();
        for dir in stale {
            let mut released = self.drop_listing(dir);
            // The directory itself, if only its listing kept it.
            released.push(dir);
            self.release(released);
        }
    }

    /// The file made here at `place` and not uploaded yet: no listing or
    /// question to the store knows it.
    pub fn pending_at(&self, place: &Place) -> Option<u64> {
        self.by_place
            .get(place)
            .copied()
            .filter(|ino| self.nodes.get(ino).is_some_and(|node| node.pending))
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
            if !node.pending && !node.unsaved {
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
                unsaved: false,
                unlinked: false,
                kernel_refs: 0,
                listing_refs: 0,
            },
        );
        ino
    }

    /// The children of `dir` if its listing is fresh: Some(None) when the
    /// name is absent, None when the listing must be fetched.
    pub fn cached_child(&self, dir: u64, name: &str, now: Instant) -> Option<Option<u64>> {
        self.fresh_listing(dir, now)?;
        self.listed_child(dir, name)
    }

    /// Like [`Tree::cached_child`], from the listing cached however old
    /// (one just installed, with a zero TTL).
    pub fn listed_child(&self, dir: u64, name: &str) -> Option<Option<u64>> {
        let listing = self.listings.get(&dir)?;
        Some(listing.children.get(name).copied())
    }

    /// The children of `dir` (name, inode, kind) if its listing is fresh.
    pub fn cached_children(&self, dir: u64, now: Instant) -> Option<DirEntries> {
        self.fresh_listing(dir, now)?;
        self.listed_children(dir)
    }

    /// Like [`Tree::cached_children`], from the listing cached however old.
    pub fn listed_children(&self, dir: u64) -> Option<DirEntries> {
        let listing = self.listings.get(&dir)?;
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
    /// created here and not uploaded yet stay. Returns what it shows, as
    /// installed (another thread's sweep may drop it right after).
    pub fn install_listing(
        &mut self,
        dir: u64,
        children: Vec<Child>,
        fetched: Instant,
    ) -> DirEntries {
        let Some(dir_place) = self.nodes.get(&dir).map(|node| node.place.clone()) else {
            return DirEntries::new();
        };
        self.installs_since_sweep += 1;
        if self.installs_since_sweep >= SWEEP_EVERY {
            self.installs_since_sweep = 0;
            self.sweep_stale_listings(fetched);
        }
        let mut names = BTreeMap::new();
        for child in children {
            let ino = self.intern(dir_place.child(&child.name), &child);
            names.insert(child.name, ino);
        }
        if let Some(old) = self.listings.get(&dir) {
            for (name, ino) in &old.children {
                if self.nodes.get(ino).is_some_and(|node| node.pending) {
                    names.entry(name.clone()).or_insert(*ino);
                }
            }
        }
        self.set_listing(
            dir,
            Listing {
                fetched,
                children: names,
            },
        );
        self.listed_children(dir).unwrap_or_default()
    }

    /// Records a child made here (or found by a lookup) in `dir`'s listing,
    /// if one is cached.
    pub fn add_child(&mut self, dir: u64, name: &str, ino: u64) {
        let Some(listing) = self.listings.get_mut(&dir) else {
            return;
        };
        let replaced = listing.children.insert(name.to_owned(), ino);
        if replaced == Some(ino) {
            return;
        }
        self.list(ino);
        if let Some(replaced) = replaced {
            let released = self.unlist([replaced]);
            self.release(released);
        }
    }

    /// The inode `place` names, if any.
    pub fn ino_at(&self, place: &Place) -> Option<u64> {
        self.by_place.get(place).copied()
    }

    /// Forgets `name` in `dir`: its place no longer names an inode.
    pub fn remove_child(&mut self, dir: u64, name: &str) {
        let mut released = Vec::new();
        if let Some(removed) = self
            .listings
            .get_mut(&dir)
            .and_then(|listing| listing.children.remove(name))
        {
            released.extend(self.unlist([removed]));
        }
        if let Some(place) = self.nodes.get(&dir).map(|node| node.place.child(name))
            && let Some(ino) = self.by_place.remove(&place)
        {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.unlinked = true;
            }
            released.extend(self.drop_listing(ino));
            released.push(ino);
        }
        self.release(released);
    }

    /// Moves file `ino` to `name` in `dir` after the store has.
    pub fn move_file(&mut self, ino: u64, from: (u64, &str), to: (u64, &str)) {
        // What `to` named is gone: the store replaced it.
        self.remove_child(to.0, to.1);
        let Some(place) = self.nodes.get(&to.0).map(|node| node.place.child(to.1)) else {
            return;
        };
        // The file leaves `from` without being released on the way.
        if let Some(removed) = self
            .listings
            .get_mut(&from.0)
            .and_then(|listing| listing.children.remove(from.1))
        {
            self.unlist([removed]);
        }
        if let Some(old_place) = self.nodes.get(&from.0).map(|node| node.place.child(from.1))
            && self.by_place.get(&old_place) == Some(&ino)
        {
            self.by_place.remove(&old_place);
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.place = place.clone();
        }
        self.by_place.insert(place, ino);
        self.add_child(to.0, to.1, ino);
        self.release(vec![ino]);
    }

    /// Marks `dir` as freshly listed with no children (a directory just made).
    pub fn mark_empty(&mut self, dir: u64, now: Instant) {
        self.set_listing(
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

    fn file(name: &str) -> Child {
        Child {
            name: name.to_owned(),
            kind: Kind::File,
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn directory(name: &str) -> Child {
        Child {
            kind: Kind::Directory,
            ..file(name)
        }
    }

    /// Nodes live while the kernel holds them or a cached listing shows
    /// them; listing a big directory, then letting go of it, leaves nothing
    /// behind.
    #[test]
    fn nodes_go_once_neither_the_kernel_nor_a_listing_holds_them() {
        let ttl = Duration::from_secs(1);
        let mut tree = Tree::new(Place::Container("c".into()), ttl);
        let start = Instant::now();
        let names: Vec<String> = (0..1000).map(|n| format!("f{n}")).collect();
        let mut children: Vec<Child> = names.iter().map(|name| file(name)).collect();
        children.push(directory("sub"));
        tree.install_listing(ROOT, children, start);
        assert_eq!(tree.len(), 1002);
        let sub = tree.cached_child(ROOT, "sub", start).flatten().unwrap();
        tree.install_listing(sub, vec![file("deep")], start);
        let deep = tree.cached_child(sub, "deep", start).flatten().unwrap();

        // The kernel looks up one file and the subdirectory's file.
        let held = tree.cached_child(ROOT, "f7", start).flatten().unwrap();
        tree.looked_up(held);
        tree.looked_up(held);
        tree.looked_up(deep);
        // The listing is refreshed without most files: they go.
        let later = start + ttl * 2;
        tree.install_listing(ROOT, vec![file("f7"), directory("sub")], later);
        assert_eq!(tree.len(), 4, "root, f7, sub, deep");
        assert_eq!(tree.cached_child(ROOT, "f7", later), Some(Some(held)));

        // The kernel forgets in part, then wholly.
        tree.forget(held, 1);
        assert!(tree.node(held).is_some());
        // Stale listings go as new ones come: sub's, then root's.
        let much_later = later + ttl * 2;
        for n in 0..SWEEP_EVERY {
            let dir = tree.intern(
                Place::Container("c".into()).child(&format!("d{n}")),
                &directory("x"),
            );
            tree.install_listing(dir, vec![], much_later);
        }
        assert!(tree.node(deep).is_some(), "the kernel holds it");
        assert!(tree.node(held).is_some(), "the kernel holds it");
        tree.forget(deep, 1);
        tree.forget(held, 1);
        assert!(tree.node(deep).is_none());
        assert!(tree.node(held).is_none());
        assert!(
            tree.node(sub).is_none(),
            "no listing shows it, nobody holds it"
        );
        // Left: the root and the directories listed last, whose listings
        // are still fresh; once those are stale, a sweep takes them, and the
        // directories with them, which nothing else holds.
        assert_eq!(tree.len(), 1 + SWEEP_EVERY as usize);
        for _ in 0..SWEEP_EVERY {
            tree.install_listing(ROOT, vec![], much_later + ttl * 2);
        }
        assert_eq!(tree.len(), 1);
        // A forgotten place gets a new inode when it is seen again.
        let again = tree.intern(Place::Container("c".into()).child("f7"), &file("f7"));
        assert_ne!(again, held);
    }

    /// A file moved keeps its inode and stays held by what holds it.
    #[test]
    fn a_moved_file_keeps_its_inode() {
        let mut tree = Tree::new(Place::Container("c".into()), Duration::from_secs(1));
        let start = Instant::now();
        tree.install_listing(ROOT, vec![file("a"), file("b")], start);
        let a = tree.cached_child(ROOT, "a", start).flatten().unwrap();
        let b = tree.cached_child(ROOT, "b", start).flatten().unwrap();
        tree.looked_up(a);
        tree.looked_up(b);
        tree.move_file(a, (ROOT, "a"), (ROOT, "b"));
        assert_eq!(tree.cached_child(ROOT, "a", start), Some(None));
        assert_eq!(tree.cached_child(ROOT, "b", start), Some(Some(a)));
        // The replaced file lives while the kernel holds it, unlinked: its
        // writers must not upload over what replaced it.
        assert!(tree.node(b).is_some_and(|node| node.unlinked));
        assert!(tree.node(a).is_some_and(|node| !node.unlinked));
        tree.forget(b, 1);
        assert!(tree.node(b).is_none(), "the replaced file went");
        assert_eq!(
            tree.node(a).map(|node| node.place.clone()),
            Some(Place::Container("c".into()).child("b"))
        );
        tree.forget(a, 1);
        assert!(tree.node(a).is_some(), "the listing still shows it");
        tree.remove_child(ROOT, "b");
        assert!(tree.node(a).is_none());
        assert_eq!(tree.len(), 1);
    }

    /// A listing refresh does not take back the size of a file written here
    /// and not uploaded yet (an append would then overwrite its own end).
    #[test]
    fn unsaved_writes_keep_their_size_through_a_refresh() {
        let mut tree = Tree::new(Place::Container("c".into()), Duration::from_secs(1));
        let start = Instant::now();
        tree.install_listing(ROOT, vec![file("log")], start);
        let log = tree.cached_child(ROOT, "log", start).flatten().unwrap();
        if let Some(node) = tree.node_mut(log) {
            node.size = 4096;
            node.unsaved = true;
        }
        tree.install_listing(ROOT, vec![file("log")], start + Duration::from_secs(2));
        assert_eq!(tree.node(log).map(|node| node.size), Some(4096));
        if let Some(node) = tree.node_mut(log) {
            node.unsaved = false;
        }
        tree.install_listing(ROOT, vec![file("log")], start + Duration::from_secs(4));
        assert_ne!(tree.node(log).map(|node| node.size), Some(4096));
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
        let place = Place::Container("c".into()).child("new.txt");
        assert_eq!(tree.pending_at(&place), Some(ino));
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
        assert_eq!(tree.pending_at(&place), None);
    }
}
