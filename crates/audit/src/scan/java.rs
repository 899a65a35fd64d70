//! Detectors for Java: static (or singleton-bean) mutable collections written at run
//! time, Guava/Caffeine and Spring local caches, HttpSession without Spring Session,
//! uploads written to local disk, @Scheduled / ScheduledExecutorService / Timer jobs,
//! Bucket4j and Guava rate limiters.
//!
//! Must never flag immutable collections (`Map.of`, `Collections.unmodifiable*`,
//! `ImmutableMap`), collections filled only in constructors, static initialisers or
//! @PostConstruct/start-up methods, nor @Scheduled methods guarded by ShedLock.

use std::collections::BTreeMap;

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, text, walk};
use super::{FileCtx, Hit, Sink, startup_function};
use crate::Confidence;

const SINGLETON_ANNOTATIONS: &[&str] = &[
    "Service",
    "Component",
    "Controller",
    "RestController",
    "Repository",
    "Singleton",
    "ApplicationScoped",
    "Configuration",
];

const MUTABLE_COLLECTIONS: &[&str] = &[
    "HashMap",
    "ConcurrentHashMap",
    "LinkedHashMap",
    "TreeMap",
    "ArrayList",
    "LinkedList",
    "HashSet",
    "LinkedHashSet",
    "TreeSet",
    "ConcurrentLinkedQueue",
    "ConcurrentLinkedDeque",
    "ArrayDeque",
    "CopyOnWriteArrayList",
    "CopyOnWriteArraySet",
    "ConcurrentSkipListMap",
    "ConcurrentSkipListSet",
    "LinkedBlockingQueue",
    "ArrayBlockingQueue",
    "PriorityQueue",
    "Hashtable",
    "Vector",
    "Stack",
    "WeakHashMap",
];

const WRITE_METHODS: &[&str] = &[
    "put",
    "putAll",
    "putIfAbsent",
    "compute",
    "computeIfAbsent",
    "computeIfPresent",
    "merge",
    "remove",
    "clear",
    "add",
    "addAll",
    "offer",
    "push",
    "poll",
    "pop",
    "set",
    "replace",
    "addFirst",
    "addLast",
    "removeIf",
];

struct Field<'t> {
    node: Node<'t>,
    is_static: bool,
    writes: Vec<String>,
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    walk(root, |n| {
        if n.kind() != "field_declaration" {
            return;
        }
        let mods = n
            .named_children(&mut n.walk())
            .find(|c| c.kind() == "modifiers")
            .map(|m| text(m, src))
            .unwrap_or("");
        let is_static = mods.split_whitespace().any(|w| w == "static");
        let singleton = ancestor(n, &["class_declaration"])
            .is_some_and(|c| class_annotated(c, src, SINGLETON_ANNOTATIONS));
        if !is_static && !singleton {
            return;
        }
        for d in named_children(n) {
            if d.kind() != "variable_declarator" {
                continue;
            }
            let (Some(name), Some(value)) = (field(d, "name"), field(d, "value")) else {
                continue;
            };
            if mutable_collection(value, src) {
                fields.insert(
                    text(name, src).to_string(),
                    Field {
                        node: n,
                        is_static,
                        writes: Vec::new(),
                    },
                );
            }
        }
    });

    let shared_cache_dep = [
        "redis",
        "hazelcast",
        "memcached",
        "infinispan",
        "couchbase",
        "jcache-redis",
    ]
    .iter()
    .any(|d| ctx.has_dep(d));
    let spring_session = ctx.has_dep("spring-session");
    let mut session_reported = false;

    walk(root, |n| match n.kind() {
        "method_invocation" => {
            let name = field(n, "name").map(|x| text(x, src)).unwrap_or("");
            let obj = field(n, "object");
            let obj_text = obj.map(|o| text(o, src)).unwrap_or("");
            if let Some(o) = obj {
                let target = match o.kind() {
                    "identifier" => Some(text(o, src)),
                    "field_access" => field(o, "field").map(|f| text(f, src)),
                    _ => None,
                };
                if let Some(t) = target
                    && WRITE_METHODS.contains(&name)
                    && let Some(f) = fields.get_mut(t)
                    && in_runtime_method(n, src)
                {
                    f.writes.push(name.to_string());
                }
            }
            match (obj_text, name) {
                ("Caffeine" | "CacheBuilder", "newBuilder") => hits.push(Hit::at(
                    "JAVA-LOCAL-CACHE",
                    n,
                    format!("{obj_text} in-process cache: each instance holds its own copy"),
                )),
                ("Executors", "newScheduledThreadPool" | "newSingleThreadScheduledExecutor") => {
                    hits.push(Hit::at(
                        "JAVA-SCHEDULED",
                        n,
                        format!("Executors.{name} runs scheduled work in every instance"),
                    ))
                }
                ("Bucket" | "Bucket4j", "builder") => hits.push(Hit::at(
                    "JAVA-RATELIMIT-MEMORY",
                    n,
                    "Bucket4j local bucket counts per instance",
                )),
                ("RateLimiter", "create") => hits.push(Hit::at(
                    "JAVA-RATELIMIT-MEMORY",
                    n,
                    "Guava RateLimiter counts per instance",
                )),
                (_, "getSession") if !spring_session && !session_reported => {
                    session_reported = true;
                    hits.push(
                        Hit::at("JAVA-SESSION-MEMORY", n, "HttpSession used: the servlet container keeps it in this instance's memory")
                            .condition("no spring-session dependency in the build files"),
                    );
                }
                _ => {}
            }
            if name == "transferTo"
                && in_upload_method(n, src)
                && !obj_text.contains("getInputStream")
            {
                hits.push(Hit::at(
                    "JAVA-LOCAL-WRITE",
                    n,
                    "MultipartFile.transferTo writes the upload to this instance's disk",
                ));
            }
            if obj_text == "Files"
                && matches!(
                    name,
                    "write" | "copy" | "writeString" | "newOutputStream" | "newBufferedWriter"
                )
                && in_upload_method(n, src)
            {
                hits.push(Hit::at(
                    "JAVA-LOCAL-WRITE",
                    n,
                    format!("Files.{name} stores the upload on this instance's disk"),
                ));
            }
        }
        "object_creation_expression" => {
            let ty = field(n, "type").map(|t| text(t, src)).unwrap_or("");
            let base = ty
                .split('<')
                .next()
                .unwrap_or(ty)
                .rsplit('.')
                .next()
                .unwrap_or(ty);
            match base {
                "FileOutputStream" | "FileWriter" if in_upload_method(n, src) => {
                    hits.push(Hit::at(
                        "JAVA-LOCAL-WRITE",
                        n,
                        format!("new {base} stores the upload on this instance's disk"),
                    ))
                }
                "Timer" if ty == "Timer" || ty == "java.util.Timer" => hits.push(Hit::at(
                    "JAVA-SCHEDULED",
                    n,
                    "java.util.Timer runs scheduled work in every instance",
                )),
                "ConcurrentMapCacheManager" | "CaffeineCacheManager" => hits.push(Hit::at(
                    "JAVA-LOCAL-CACHE",
                    n,
                    format!("{base}: Spring caches held in this process"),
                )),
                _ => {}
            }
        }
        "formal_parameter" => {
            let ty = field(n, "type").map(|t| text(t, src)).unwrap_or("");
            if ty == "HttpSession" && !spring_session && !session_reported {
                session_reported = true;
                hits.push(
                    Hit::at("JAVA-SESSION-MEMORY", n, "HttpSession parameter: the servlet container keeps it in this instance's memory")
                        .condition("no spring-session dependency in the build files"),
                );
            }
        }
        "marker_annotation" | "annotation" => {
            let name = field(n, "name").map(|x| text(x, src)).unwrap_or("");
            let name = name.rsplit('.').next().unwrap_or(name);
            if name == "Scheduled"
                && let Some(mods) = n.parent()
                && !text(mods, src).contains("SchedulerLock")
            {
                hits.push(Hit::at(
                    "JAVA-SCHEDULED",
                    n,
                    "@Scheduled method runs on every instance",
                ));
            }
            if name == "EnableCaching" && !shared_cache_dep {
                hits.push(
                    Hit::at("JAVA-LOCAL-CACHE", n, "@EnableCaching with no shared cache provider: Spring caches live in this process")
                        .condition("no Redis/Hazelcast/Memcached/Infinispan dependency in the build files"),
                );
            }
        }
        _ => {}
    });

    for (name, f) in fields {
        if f.writes.is_empty() {
            continue;
        }
        let mut w = f.writes.clone();
        w.sort();
        w.dedup();
        let mut hit = Hit::at(
            "JAVA-STATIC-MAP",
            f.node,
            format!(
                "{} collection `{name}` is written at run time ({})",
                if f.is_static {
                    "static"
                } else {
                    "singleton-bean"
                },
                w.join(", ")
            ),
        );
        hit = hit.per_user_if(&name);
        hits.push(hit);
    }
}

fn class_annotated(class: Node, src: &str, names: &[&str]) -> bool {
    let Some(mods) = class
        .named_children(&mut class.walk())
        .find(|c| c.kind() == "modifiers")
    else {
        return false;
    };
    named_children(mods).iter().any(|a| {
        matches!(a.kind(), "marker_annotation" | "annotation")
            && field(*a, "name")
                .is_some_and(|n| names.contains(&text(n, src).rsplit('.').next().unwrap_or("")))
    })
}

/// A mutable collection initialiser (not `Map.of`, `List.of`, unmodifiable or immutable).
fn mutable_collection(value: Node, src: &str) -> bool {
    match value.kind() {
        "object_creation_expression" => {
            let ty = field(value, "type").map(|t| text(t, src)).unwrap_or("");
            let base = ty.split('<').next().unwrap_or(ty);
            MUTABLE_COLLECTIONS.contains(&base.rsplit('.').next().unwrap_or(base))
        }
        "method_invocation" => {
            let t = text(value, src);
            t.starts_with("Collections.synchronized")
                || t.starts_with("Maps.newHashMap")
                || t.starts_with("Maps.newConcurrentMap")
                || t.starts_with("Lists.newArrayList()")
                || t.starts_with("Sets.newConcurrentHashSet")
        }
        _ => false,
    }
}

/// Inside a method (not a constructor, static initialiser, @PostConstruct or start-up
/// method).
fn in_runtime_method(n: Node, src: &str) -> bool {
    let Some(m) = ancestor(
        n,
        &[
            "method_declaration",
            "constructor_declaration",
            "static_initializer",
            "lambda_expression",
        ],
    ) else {
        return false;
    };
    let m = if m.kind() == "lambda_expression" {
        match ancestor(
            m,
            &[
                "method_declaration",
                "constructor_declaration",
                "static_initializer",
            ],
        ) {
            Some(x) => x,
            None => return false,
        }
    } else {
        m
    };
    if m.kind() != "method_declaration" {
        return false;
    }
    let name = field(m, "name").map(|x| text(x, src)).unwrap_or("");
    let mods = m
        .named_children(&mut m.walk())
        .find(|c| c.kind() == "modifiers")
        .map(|x| text(x, src))
        .unwrap_or("");
    !(startup_function(name)
        || mods.contains("PostConstruct")
        || name == "afterPropertiesSet"
        || name == "run" && mods.contains("Override") && text(m, src).contains("String... args"))
}

/// Inside a method that receives an uploaded file (MultipartFile, Part, FilePart).
fn in_upload_method(n: Node, src: &str) -> bool {
    let Some(m) = ancestor(n, &["method_declaration"]) else {
        return false;
    };
    let Some(params) = field(m, "parameters") else {
        return false;
    };
    named_children(params).iter().any(|p| {
        field(*p, "type").is_some_and(|t| {
            let t = text(t, src);
            t.contains("MultipartFile")
                || t == "Part"
                || t == "FilePart"
                || t.contains("MultipartHttpServletRequest")
        })
    })
}
