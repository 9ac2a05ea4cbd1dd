//! Manifest mode: Kubernetes objects read from `*.yaml`/`*.yml` files in one directory, re-read whenever
//! the directory changes (inotify, with a periodic rescan as a safety net). A notification that names
//! manifest files re-reads only those, so one changed file among 10,000 costs one file's work.
//!
//! A file that fails to parse keeps contributing the objects of its last good version, so a half-saved
//! edit never takes a route down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::gateway_api::gatewayclasses::GatewayClass;
use crate::gateway_api::gateways::Gateway;
use crate::gateway_api::grpcroutes::GrpcRoute;
use crate::gateway_api::httproutes::HttpRoute;
use crate::gateway_api::referencegrants::ReferenceGrant;
use crate::model::{Object, ObjectRef, Problem, ProblemKind, Snapshot};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// How long to wait after a change notification for the rest of a burst (an editor's save, a `cp -r`).
const DEBOUNCE: Duration = Duration::from_millis(15);
/// Rescan this often even without notifications (network filesystems, missed events).
const RESCAN: Duration = Duration::from_secs(2);

/// Deeper flow nesting (`[`, `{`) than this is refused before parsing.
const MAX_FLOW_DEPTH: usize = 128;

/// Where `text` first nests `[` and `{` deeper than [`MAX_FLOW_DEPTH`], if it does. Quotes and
/// comments are not considered, so brackets inside strings count too; no real manifest comes close.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses every YAML document of one file. Objects of other kinds are ignored; a document that cannot
/// be read as its kind is reported and skipped. `kind: List` is unpacked.
pub fn parse_documents(text: &str, file: &Arc<str>) -> (Vec<Object>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    if let Some(at) = too_deep(text) {
        // The YAML scanner's cost grows with flow depth for every token: 20,000 `[` take seconds.
        // Nothing nested that deep can be read anyway (serde_yaml's limit is 128 levels).
        problems.push(Problem::file(
            file.clone(),
            ProblemKind::ParseError,
            format!("more than {MAX_FLOW_DEPTH} nested [ or {{ (byte {at}); not parsed"),
        ));
        return (objects, problems);
    }
    for (n, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(document) {
            Ok(value) => parse_value(
                value,
                &format!("document {}", n + 1),
                file,
                &mut objects,
                &mut problems,
            ),
            Err(e) => {
                problems.push(Problem::file(
                    file.clone(),
                    ProblemKind::ParseError,
                    format!("document {}: {e}", n + 1),
                ));
                // After a syntax error the stream cannot be resynchronised.
                break;
            }
        }
    }
    (objects, problems)
}

fn parse_value(
    value: serde_yaml::Value,
    at: &str,
    file: &Arc<str>,
    objects: &mut Vec<Object>,
    problems: &mut Vec<Problem>,
) {
    if value.is_null() {
        return; // an empty document, e.g. a trailing `---`
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let describe = format!("{at} ({kind} {name:?})");
    let mut push = |result: Result<Object, String>| match result {
        Ok(object) => objects.push(object),
        Err(e) => problems.push(Problem::file(
            file.clone(),
            ProblemKind::ParseError,
            format!("{describe}: {e}"),
        )),
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => match value.get("items").and_then(|i| i.as_sequence()) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    parse_value(
                        item.clone(),
                        &format!("{at} item {}", i + 1),
                        file,
                        objects,
                        problems,
                    );
                }
            }
            None => push(Err("a List needs an items array".into())),
        },
        ("networking.k8s.io/v1", "Ingress") => push(typed(value, true).map(Object::Ingress)),
        ("networking.k8s.io/v1", "IngressClass") => {
            push(typed(value, false).map(Object::IngressClass))
        }
        ("v1", "Secret") => push(typed(value, true).map(|s| Object::Secret(fold_string_data(s)))),
        ("v1", "Service") => push(typed(value, true).map(Object::Service)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            push(typed(value, true).map(Object::EndpointSlice))
        }
        ("v1", "Namespace") => push(typed(value, false).map(Object::Namespace)),
        (GATEWAY_V1, "GatewayClass") => push(typed(value, false).map(Object::GatewayClass)),
        (GATEWAY_V1, "Gateway") => push(typed(value, true).map(Object::Gateway)),
        (GATEWAY_V1, "HTTPRoute") => push(typed(value, true).map(Object::HttpRoute)),
        (GATEWAY_V1, "GRPCRoute") => push(typed(value, true).map(Object::GrpcRoute)),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "ReferenceGrant") => {
            push(typed(value, true).map(Object::ReferenceGrant))
        }
        (_, "Ingress" | "IngressClass" | "Secret" | "Service" | "EndpointSlice" | "Namespace") => {
            push(Err(format!(
                "apiVersion {api_version:?} is not supported for {kind} (use networking.k8s.io/v1, v1 or discovery.k8s.io/v1)"
            )))
        }
        (_, "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant")
            if api_version.starts_with("gateway.networking.k8s.io/") =>
        {
            push(Err(format!(
                "apiVersion {api_version:?} is not supported for {kind} (use {GATEWAY_V1})"
            )))
        }
        ("", _) | (_, "") => push(Err(
            "not a Kubernetes object (apiVersion and kind are required)".into(),
        )),
        _ => {} // another kind: not ours to read
    }
}

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
/// ReferenceGrant's older version, the same schema, which many manifests still use.
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";

/// Reads a value as a typed object; namespaced objects without a namespace go to `default`.
fn typed<T: DeserializeOwned + HasMeta>(
    value: serde_yaml::Value,
    namespaced: bool,
) -> Result<Arc<T>, String> {
    let mut object: T = serde_yaml::from_value(value).map_err(|e| e.to_string())?;
    let meta = object.meta_mut();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err("metadata.name is required".into());
    }
    if namespaced && meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    Ok(Arc::new(object))
}

/// Moves `stringData` into `data`, overriding, as the API server does when it stores a Secret: every
/// reader of Secrets then sees the same single map in both modes.
fn fold_string_data(secret: Arc<Secret>) -> Arc<Secret> {
    if secret.string_data.is_none() {
        return secret;
    }
    let mut secret = Arc::unwrap_or_clone(secret);
    let text = secret.string_data.take().unwrap_or_default();
    let data = secret.data.get_or_insert_with(Default::default);
    for (key, value) in text {
        data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
    }
    Arc::new(secret)
}

trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => { $(impl HasMeta for $t { fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata } })* };
}
has_meta!(
    Ingress,
    IngressClass,
    Secret,
    Service,
    EndpointSlice,
    Namespace,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant
);

/// What tells that a file may have changed without reading it: a rename gives a new inode, an edit a
/// new change time (nanoseconds) and usually a new size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    changed: (i64, i64),
    modified: SystemTime,
    len: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            inode: meta.ino(),
            changed: (meta.ctime(), meta.ctime_nsec()),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: meta.len(),
        }
    }
}

/// What one file contributed last time it was read.
struct FileState {
    /// The path as problems and duplicate reports name it.
    display: Arc<str>,
    /// The last rescan that saw the file; files not seen by the current one are gone.
    seen: u64,
    /// Changes when the file is replaced or edited; checked before reading the file again.
    stamp: FileStamp,
    content_hash: u64,
    objects: Vec<Object>,
    /// Whether `objects` come from a version of the file that parsed without problems.
    good: bool,
    problems: Vec<Problem>,
}

/// The files of one directory and the objects they hold.
pub struct ManifestDir {
    dir: PathBuf,
    /// By file name (all in `dir`), so lookups compare bytes rather than path components: a rescan
    /// of 10,000 files costs a few milliseconds.
    files: BTreeMap<OsString, FileState>,
    scans: u64,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            scans: 0,
        }
    }

    /// Re-reads files that changed; returns whether anything did.
    pub fn rescan(&mut self) -> std::io::Result<bool> {
        self.scans += 1;
        let scan = self.scans;
        let mut changed = false;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            if !is_manifest(Path::new(&file_name)) {
                continue;
            }
            // Follow symlinks (ConfigMap volumes link every file through `..data`); a plain file is
            // looked up relative to the open directory, without walking the path again.
            let meta = match entry.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(entry.path()),
                _ => entry.metadata(),
            };
            let Ok(meta) = meta else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = FileStamp::of(&meta);
            if let Some(file) = self.files.get_mut(&file_name) {
                file.seen = scan;
                if file.stamp == stamp {
                    continue;
                }
            }
            changed |= self.read_file(file_name, stamp, meta.len());
        }
        let before = self.files.len();
        self.files.retain(|_, file| file.seen == scan);
        Ok(changed || self.files.len() != before)
    }

    /// Re-reads only these files of the directory (manifest names), as a notification named them;
    /// returns whether anything changed.
    pub fn refresh(&mut self, names: &BTreeSet<OsString>) -> bool {
        let mut changed = false;
        for name in names {
            let meta = std::fs::metadata(self.dir.join(name));
            match meta {
                Ok(meta) if meta.is_file() => {
                    let stamp = FileStamp::of(&meta);
                    if let Some(file) = self.files.get_mut(name)
                        && file.stamp == stamp
                    {
                        continue;
                    }
                    changed |= self.read_file(name.clone(), stamp, meta.len());
                }
                _ => changed |= self.files.remove(name).is_some(),
            }
        }
        changed
    }

    fn read_file(&mut self, file_name: OsString, stamp: FileStamp, len: u64) -> bool {
        let path = self.dir.join(&file_name);
        let path = path.as_path();
        let name: Arc<str> = path.display().to_string().into();
        let text = if len > MAX_FILE_BYTES {
            Err(format!(
                "file is {len} bytes, more than the {MAX_FILE_BYTES} allowed"
            ))
        } else {
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| "file is not UTF-8 text".to_string())
                })
        };
        let (content_hash, parsed) = match text {
            Ok(text) => {
                let mut h = DefaultHasher::new();
                text.hash(&mut h);
                let hash = h.finish();
                if self
                    .files
                    .get(&file_name)
                    .is_some_and(|f| f.content_hash == hash)
                {
                    if let Some(f) = self.files.get_mut(&file_name) {
                        f.stamp = stamp;
                    }
                    return false;
                }
                (hash, parse_documents(&text, &name))
            }
            Err(e) => (
                0,
                (
                    Vec::new(),
                    vec![Problem::file(name.clone(), ProblemKind::ParseError, e)],
                ),
            ),
        };
        let (mut objects, problems) = parsed;
        let mut good = problems.is_empty();
        if !good && let Some(previous) = self.files.get(&file_name).filter(|f| f.good) {
            // Keep serving the last good version of this file.
            objects = previous.objects.clone();
            good = true;
        }
        self.files.insert(
            file_name,
            FileState {
                display: name,
                seen: self.scans,
                stamp,
                content_hash,
                objects,
                good,
                problems,
            },
        );
        true
    }

    /// All objects of all files, the first definition of an object winning over later duplicates.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut origins: HashMap<ObjectRef, Arc<str>> = HashMap::new();
        for file in self.files.values() {
            let name = &file.display;
            snapshot.problems.extend(file.problems.iter().cloned());
            for object in &file.objects {
                let id = object.object_ref();
                if let Some(first) = origins.get(&id) {
                    snapshot.problems.push(Problem {
                        object: Some(id.clone()),
                        file: Some(name.clone()),
                        kind: ProblemKind::DuplicateObject,
                        message: format!("is also defined in {first}; that definition is used"),
                    });
                    continue;
                }
                origins.insert(id, name.clone());
                snapshot.push(object.clone());
            }
        }
        snapshot.origins = origins;
        snapshot
    }
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    !hidden && yaml
}

/// Watches `dir` and publishes a new snapshot whenever its manifests change. Returns only on error.
pub async fn watch_dir(
    dir: PathBuf,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
) -> anyhow::Result<()> {
    use notify::Watcher;
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel();
    // Events name paths under the directory as it was given to the watcher.
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let touched = match event {
            Ok(e) if !is_change(&e.kind) => return,
            Ok(e) => Touched::of(&e, &watched),
            Err(_) => Touched::Everything,
        };
        let _ = notify_tx.send(touched);
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;

    // Reading the directory is blocking work (10,000 files take a while to read and parse at start):
    // it runs on the blocking pool, never on a thread that serves traffic.
    let manifests = Arc::new(std::sync::Mutex::new(ManifestDir::new(&dir)));
    let first = scan(&manifests, Touched::Everything)
        .await?
        .unwrap_or_default();
    tx.send_replace(Some(first));
    tracing::info!(dir = %dir.display(), "reading manifests");

    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let touched = tokio::select! {
            event = notify_rx.recv() => {
                let Some(mut touched) = event else {
                    anyhow::bail!("file watcher for {} stopped", dir.display());
                };
                tokio::time::sleep(DEBOUNCE).await;
                while let Ok(more) = notify_rx.try_recv() {
                    touched.add(more);
                }
                touched
            }
            _ = rescan.tick() => Touched::Everything,
        };
        match scan(&manifests, touched).await {
            Ok(Some(snapshot)) => {
                tx.send_replace(Some(snapshot));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read manifest directory; keeping the last configuration")
            }
        }
    }
}

/// Whether an event can mean new content. Opening or reading is not a change: the watch also reports
/// the directory being opened, and every rescan opens it, so reacting to that would rescan forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// What a burst of notifications may have changed.
#[derive(Debug, PartialEq, Eq)]
enum Touched {
    /// Manifest files of the directory, by name; none when only other files changed.
    Files(BTreeSet<OsString>),
    /// Anything: the directory itself, a ConfigMap volume's `..data` link, a lost event.
    Everything,
}

impl Touched {
    fn of(event: &notify::Event, dir: &Path) -> Touched {
        if event.need_rescan() || event.paths.is_empty() {
            return Touched::Everything;
        }
        let mut files = BTreeSet::new();
        for path in &event.paths {
            let name = match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) if parent == dir => name,
                _ => return Touched::Everything,
            };
            if is_manifest(Path::new(name)) {
                files.insert(name.to_os_string());
            } else if name.to_string_lossy().starts_with("..") {
                // A ConfigMap volume swaps its `..data` link; every file may have changed.
                return Touched::Everything;
            }
            // Any other file (an editor's or `atomic write`'s temporary one) is never read.
        }
        Touched::Files(files)
    }

    fn add(&mut self, other: Touched) {
        match (&mut *self, other) {
            (Touched::Files(files), Touched::Files(more)) => files.extend(more),
            (_, Touched::Everything) => *self = Touched::Everything,
            (Touched::Everything, Touched::Files(_)) => {}
        }
    }
}

/// Re-reads what was touched on the blocking pool; a new snapshot if anything changed (always when
/// everything was rescanned the first time).
async fn scan(
    manifests: &Arc<std::sync::Mutex<ManifestDir>>,
    touched: Touched,
) -> std::io::Result<Option<Arc<Snapshot>>> {
    let manifests = manifests.clone();
    tokio::task::spawn_blocking(move || {
        let mut m = manifests.lock().unwrap_or_else(|p| p.into_inner());
        let first = m.scans == 0;
        let changed = match &touched {
            Touched::Everything => m.rescan()?,
            Touched::Files(names) => m.refresh(names),
        };
        Ok((changed || first).then(|| Arc::new(m.snapshot())))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Object>, Vec<Problem>) {
        parse_documents(text, &Arc::from("test.yaml"))
    }

    #[test]
    fn notifications_name_the_manifests_to_reread() {
        use notify::event::{CreateKind, Event, EventKind, Flag, ModifyKind, RenameMode};
        let dir = Path::new("/etc/portcullis");
        let event = |kind, names: &[&str]| {
            names
                .iter()
                .fold(Event::new(kind), |e, n| e.add_path(dir.join(n)))
        };
        let files =
            |names: &[&str]| Touched::Files(names.iter().map(|n| OsString::from(*n)).collect());
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(
            Touched::of(&event(renamed, &[".web.yaml.tmp", "web.yaml"]), dir),
            files(&["web.yaml"])
        );
        let created = EventKind::Create(CreateKind::File);
        assert_eq!(
            Touched::of(&event(created, &["4913"]), dir),
            files(&[]),
            "an editor's probe file is never read"
        );
        assert_eq!(
            Touched::of(&event(created, &["..data"]), dir),
            Touched::Everything,
            "a ConfigMap volume's update swaps ..data"
        );
        let elsewhere = Event::new(created).add_path("/tmp/web.yaml".into());
        assert_eq!(Touched::of(&elsewhere, dir), Touched::Everything);
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(Touched::of(&overflow, dir), Touched::Everything);

        let mut burst = files(&["a.yaml"]);
        burst.add(files(&["b.yaml"]));
        assert_eq!(burst, files(&["a.yaml", "b.yaml"]));
        burst.add(Touched::Everything);
        assert_eq!(burst, Touched::Everything);
    }

    #[test]
    fn refreshing_named_files_rereads_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, service: &str| {
            std::fs::write(
                dir.path().join(name),
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: ns}}\n"
                ),
            )
            .unwrap()
        };
        let services = |m: &ManifestDir| {
            let mut names: Vec<String> = m
                .snapshot()
                .services
                .iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect();
            names.sort();
            names
        };
        write("a.yaml", "a");
        write("b.yaml", "b");
        let mut m = ManifestDir::new(dir.path());
        assert!(m.rescan().unwrap());
        write("a.yaml", "a2");
        write("b.yaml", "b2");
        let named = |n: &[&str]| n.iter().map(OsString::from).collect::<BTreeSet<_>>();
        assert!(m.refresh(&named(&["a.yaml"])));
        assert_eq!(services(&m), ["a2", "b"], "b.yaml was not named");
        assert!(!m.refresh(&named(&["a.yaml"])), "nothing new");
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        write("c.yaml", "c");
        assert!(m.refresh(&named(&["a.yaml", "c.yaml"])));
        assert_eq!(services(&m), ["b", "c"]);
        assert!(m.rescan().unwrap(), "the rescan finds b.yaml's change");
        assert_eq!(services(&m), ["b2", "c"]);
    }

    #[test]
    fn opening_and_reading_are_not_changes() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
    }

    #[test]
    fn reads_known_kinds_and_ignores_others() {
        let (objects, problems) = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controller: portcullis.io/ingress-controller}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let ids: Vec<String> = objects.iter().map(|o| o.object_ref().to_string()).collect();
        assert_eq!(ids, ["Service default/web", "IngressClass portcullis"]);
    }

    #[test]
    fn secret_data_is_base64_and_string_data_is_text_folded_into_data() {
        let (objects, problems) = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\ndata: {a: aGVsbG8=, b: b2xk}\nstringData: {b: world}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let Object::Secret(s) = &objects[0] else {
            panic!("not a secret")
        };
        let data = s.data.as_ref().unwrap();
        assert_eq!(data["a"].0, b"hello");
        assert_eq!(
            data["b"].0, b"world",
            "stringData wins, as in the API server"
        );
        assert!(s.string_data.is_none());
    }

    #[test]
    fn wrong_shape_is_reported_with_document_and_name() {
        let (objects, problems) = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec: {rules: 42}\n",
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(problems.len(), 1);
        let msg = problems[0].to_string();
        assert!(
            msg.contains("test.yaml") && msg.contains("document 2") && msg.contains("\"bad\""),
            "{msg}"
        );
    }

    #[test]
    fn old_api_versions_and_nameless_objects_are_reported() {
        let (objects, problems) = parse(
            "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {}\n",
        );
        assert!(objects.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.contains("apiVersion"));
        assert!(problems[1].message.contains("metadata.name"));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let (objects, problems) = parse(&deep);
        assert!(objects.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("nested"), "{}", problems[0]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let fine = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(parse(&fine).1.iter().all(|p| !p.message.contains("nested")));
    }

    #[test]
    fn syntax_error_is_reported() {
        let (_, problems) = parse("apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::ParseError);
    }

    #[test]
    fn lists_are_unpacked() {
        let (objects, problems) = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(objects.len(), 2);
    }

    #[test]
    fn broken_edit_keeps_last_good_file_and_duplicates_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api}\n").unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "not: [yaml").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
        let mut m = ManifestDir::new(dir.path());
        assert!(m.rescan().unwrap());
        let s = m.snapshot();
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.problems.len(), 1);
        assert_eq!(s.problems[0].kind, ProblemKind::DuplicateObject);

        std::fs::write(
            &a,
            "apiVersion: v1\nkind: Service\nmetadata: {name: [broken\n",
        )
        .unwrap();
        assert!(m.rescan().unwrap());
        let s = m.snapshot();
        assert_eq!(
            s.services.len(),
            2,
            "the last good version of a.yaml still counts"
        );
        assert!(s.problems.iter().any(|p| p.kind == ProblemKind::ParseError));
        std::fs::write(
            &a,
            "apiVersion: v1\nkind: Service\nmetadata: {name: [still broken\n",
        )
        .unwrap();
        assert!(m.rescan().unwrap());
        assert_eq!(
            m.snapshot().services.len(),
            2,
            "a second bad edit still keeps the last good version"
        );

        std::fs::remove_file(&a).unwrap();
        assert!(m.rescan().unwrap());
        assert!(!m.rescan().unwrap(), "nothing changed");
        let s = m.snapshot();
        assert_eq!(s.services.len(), 1, "b.yml now defines the Service");
        assert!(s.problems.is_empty());
    }
}
