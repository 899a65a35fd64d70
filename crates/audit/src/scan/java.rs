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
    // Spring Session replaces the container's sessions only with a store module.
    let spring_session = [
        "spring-session-data-redis",
        "spring-session-jdbc",
        "spring-session-hazelcast",
        "spring-session-data-mongodb",
    ]
    .iter()
    .any(|d| ctx.has_dep(d));
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
                (_, "enableSimpleBroker") => hits.push(Hit::at(
                    "JAVA-PUBSUB-MEMORY",
                    n,
                    "enableSimpleBroker: the STOMP broker is in this process; subscribers on other instances never get the messages",
                )),
                ("RateLimiter", "create") => hits.push(Hit::at(
                    "JAVA-RATELIMIT-MEMORY",
                    n,
                    "Guava RateLimiter counts per instance",
                )),
                (_, "getSession")
                    if !spring_session
                        && !session_reported
                        && (obj_text.is_empty()
                            || obj_text.to_ascii_lowercase().contains("request")
                            || obj_text.to_ascii_lowercase().contains("exchange")
                            || obj_text == "req") =>
                {
                    session_reported = true;
                    hits.push(
                        Hit::at("JAVA-SESSION-MEMORY", n, "HttpSession used: the servlet container keeps it in this instance's memory")
                            .condition("no spring-session dependency in the build files")
                            // One session store for the whole application.
                            .construct("project:java-http-session"),
                    );
                }
                ("FSDirectory" | "MMapDirectory" | "NIOFSDirectory", "open") => hits.push(Hit::at(
                    "JAVA-SEARCH-LOCAL",
                    n,
                    format!("Lucene {obj_text}.open: the search index is on this instance's disk"),
                )),
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
                "MapSessionRepository"
                | "ReactiveMapSessionRepository"
                | "InMemoryReactiveIndexedSessionRepository"
                | "InMemoryWebSessionStore" => hits.push(
                    Hit::at(
                        "JAVA-SESSION-MEMORY",
                        n,
                        format!("{base}: sessions kept in this instance's memory"),
                    )
                    .construct("project:java-http-session"),
                ),
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
                        .condition("no spring-session dependency in the build files")
                        .construct("project:java-http-session"),
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
            if name == "SpringBootApplication"
                && let Some(h2) = h2_fallback(ctx)
            {
                hits.push(
                    Hit::at("JAVA-EMBEDDED-DB", n, format!("{h2} is on the runtime classpath and no spring.datasource.url is configured: Spring Boot starts an embedded database in this instance's memory"))
                        .condition("no spring.datasource.url in the main application.properties/yml"),
                );
            }
            // A configured spring.cache.type is reported (or cleared) by the config rules.
            let cache_type_set = ctx
                .facts
                .settings
                .iter()
                .any(|s| s.key.eq_ignore_ascii_case("spring.cache.type"));
            if name == "EnableCaching" && !shared_cache_dep && !cache_type_set {
                hits.push(
                    Hit::at("JAVA-LOCAL-CACHE", n, "@EnableCaching with no shared cache provider: Spring caches live in this process")
                        .condition("no Redis/Hazelcast/Memcached/Infinispan dependency in the build files"),
                );
            }
        }
        _ => {}
    });

    exports(root, src, hits);
    for (name, f) in fields {
        if f.writes.is_empty() || super::memo_or_registry_name(&name) {
            continue;
        }
        let decl = text(f.node, src);
        if decl.contains("SseEmitter")
            || decl.contains("WebSocketSession")
            || decl.contains("Session>") && decl.contains("websocket")
        {
            hits.push(Hit::at(
                "JAVA-PUBSUB-MEMORY",
                f.node,
                format!("`{name}` holds connected clients: messages fan out only to clients of this instance"),
            ));
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

/// H2/HSQLDB/Derby on the runtime classpath (not test scope) of a Spring Boot project
/// whose main config names no datasource URL: Spring Boot's embedded fallback.
fn h2_fallback(ctx: &FileCtx) -> Option<&'static str> {
    let has_url = ctx.facts.settings.iter().any(|s| {
        let k = s.key.to_ascii_lowercase();
        let name = s.file.rsplit('/').next().unwrap_or(&s.file);
        // The main config only: `application-mysql.properties` is a profile.
        let main = matches!(
            name,
            "application.properties"
                | "application.yml"
                | "application.yaml"
                | "bootstrap.yml"
                | "bootstrap.properties"
        );
        (k == "spring.datasource.url"
            || k == "spring.r2dbc.url"
            || k.ends_with("datasource.jdbc-url"))
            && !s.value.trim().is_empty()
            && main
    });
    if has_url {
        return None;
    }
    for (dep, name) in [
        ("com.h2database", "H2"),
        ("org.hsqldb", "HSQLDB"),
        ("org.apache.derby", "Derby"),
    ] {
        if ctx
            .facts
            .manifests_of(ctx.rel)
            .any(|m| runtime_dependency(m, dep))
        {
            return Some(name);
        }
    }
    None
}

/// `dep` is declared in a pom.xml or Gradle build outside the test scope.
fn runtime_dependency(manifest: &str, dep: &str) -> bool {
    let mut at = 0;
    while let Some(i) = manifest[at..].find(dep) {
        let pos = at + i;
        // Maven: the enclosing <dependency> block; Gradle: the line.
        let block_start = manifest[..pos].rfind("<dependency>").unwrap_or(pos);
        let block_end = manifest[pos..]
            .find("</dependency>")
            .map(|e| pos + e)
            .unwrap_or(pos);
        let block = &manifest[block_start..block_end.max(pos)];
        let line_start = manifest[..pos].rfind('\n').map(|x| x + 1).unwrap_or(0);
        let line = &manifest[line_start..pos];
        let test_scope = block.contains("<scope>test</scope>")
            || line.contains("testimplementation")
            || line.contains("testruntimeonly")
            || line.contains("testcompile");
        if !test_scope {
            return true;
        }
        at = pos + dep.len();
    }
    false
}

/// Per-method facts for the cross-file pass: controller actions are handlers; file writes
/// outside upload methods are recorded for `link`.
fn exports(root: Node, src: &str, sink: &mut Sink) {
    walk(root, |m| {
        if m.kind() != "method_declaration" {
            return;
        }
        let name = field(m, "name")
            .map(|x| text(x, src).to_string())
            .unwrap_or_default();
        let owner = ancestor(m, &["class_declaration"]);
        let mods = named_children(m)
            .into_iter()
            .find(|c| c.kind() == "modifiers")
            .map(|x| text(x, src))
            .unwrap_or("");
        let params = field(m, "parameters").map(|p| text(p, src)).unwrap_or("");
        let handler = (owner
            .is_some_and(|c| class_annotated(c, src, &["Controller", "RestController"]))
            && mods.contains("Mapping"))
            // WebFlux functional endpoints.
            || params.contains("ServerRequest ");
        let mut info = super::FuncInfo {
            name,
            owner: owner
                .and_then(|c| field(c, "name"))
                .map(|x| text(x, src).to_string()),
            handler,
            row: m.start_position().row,
            ..Default::default()
        };
        let Some(body) = field(m, "body") else { return };
        let upload = in_upload_method(body, src);
        walk(body, |n| {
            if n.kind() != "method_invocation" {
                return;
            }
            let name = field(n, "name").map(|x| text(x, src)).unwrap_or("");
            let obj = field(n, "object").map(|x| text(x, src)).unwrap_or("");
            info.calls.push(name.to_string());
            info.receivers.push(obj.to_ascii_lowercase());
            if !handler
                && !upload
                && info.writes.is_empty()
                && (obj == "Files"
                    && matches!(
                        name,
                        "write" | "copy" | "writeString" | "newOutputStream" | "move"
                    )
                    || obj == "DataBufferUtils" && name == "write"
                    || obj.ends_with("FileUtils")
                        && matches!(
                            name,
                            "copy" | "zip" | "unzip" | "write" | "copyFile" | "copyDirectory"
                        )
                    || name == "copyRecursively")
            {
                info.writes.push(super::LocalWrite {
                    rule: "JAVA-LOCAL-WRITE",
                    row: n.start_position().row,
                    col: n.start_position().column,
                    what: format!("Files.{name}(...)"),
                });
            }
        });
        sink.funcs.push(info);
    });
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
