//! Prints the tree-sitter syntax tree of a file, for writing rules: `cargo run -p audit
//! --example dump -- FILE`. A development aid only; it never audits anything.

fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE");
    let src = std::fs::read_to_string(&path).expect("read file");
    let lang = audit::Lang::from_path(std::path::Path::new(&path)).expect("known language");
    let tree = audit::parse(lang, &src).expect("parse");
    print_node(tree.root_node(), &src, 0, None);
}

fn print_node(n: tree_sitter::Node, src: &str, depth: usize, field: Option<&str>) {
    let text = &src[n.byte_range()];
    let short: String = text
        .chars()
        .take(40)
        .collect::<String>()
        .replace('\n', "\\n");
    println!(
        "{}{}{} [{}] {:?}",
        "  ".repeat(depth),
        field.map(|f| format!("{f}: ")).unwrap_or_default(),
        n.kind(),
        n.start_position().row + 1,
        if n.named_child_count() == 0 {
            short
        } else {
            String::new()
        }
    );
    let mut c = n.walk();
    for (i, ch) in n.named_children(&mut c).enumerate() {
        let _ = i;
        let f = field_of(n, ch);
        print_node(ch, src, depth + 1, f);
    }
}

fn field_of<'a>(parent: tree_sitter::Node<'a>, child: tree_sitter::Node<'a>) -> Option<&'a str> {
    let mut c = parent.walk();
    if c.goto_first_child() {
        loop {
            if c.node() == child {
                return c.field_name();
            }
            if !c.goto_next_sibling() {
                break;
            }
        }
    }
    None
}
