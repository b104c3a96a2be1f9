//! `template`'s parsers: a whole template checked and compiled (`engine::Compiled::new`, which
//! runs `check`) as Go template syntax and as handlebars, on the same text; and its
//! configuration: the HCL reader, `Config::apply_file`, `-template` specs, `wait` values and
//! the dependency queries of `service`, `key`, `ls`, `node`, `nodes`, `services`.

use template::engine::{Compiled, Language, Options};

pub const DICT: &[&str] = &[
    "{{",
    "}}",
    "{{-",
    "-}}",
    "{{ ",
    " }}",
    "{{/*",
    "*/}}",
    "{{end}}",
    "{{ else }}",
    "{{ else if ",
    "{{ if ",
    "{{ range ",
    "{{ with ",
    "{{ define \"",
    "{{ block \"",
    "{{ template \"",
    "{{ break }}",
    "{{ continue }}",
    "$",
    "$x := ",
    "$x = ",
    "$_, $v := ",
    ".",
    " | ",
    "(",
    ")",
    "\"",
    "`",
    "'a'",
    "nil",
    "printf \"%s\" ",
    "index . 0",
    "service \"web\"",
    "key \"a/b\"",
    "ls \"a\"",
    "tree \"\"",
    "env \"HOME\"",
    "executeTemplate \"t\"",
    "toJSON",
    "parseJSON",
    "split \",\" ",
    "join \",\" ",
    "{{#",
    "{{/",
    "{{#if ",
    "{{#each ",
    "{{#with ",
    "{{else}}",
    "{{/if}}",
    "{{/each}}",
    "{{> ",
    "{{#> ",
    "{{#*inline \"",
    "{{/inline}}",
    "{{{",
    "}}}",
    "{{!--",
    "--}}",
    "@index",
    "this",
    "../",
    "lookup ",
    "#delims [[ ]]\n",
];

pub const HCL_DICT: &[&str] = &[
    "template {",
    "}",
    "source = \"",
    "destination = \"",
    "command = \"",
    "contents = <<EOF\n",
    "\nEOF\n",
    "wait {",
    "min = \"2s\"",
    "max = \"10s\"",
    "consul {",
    "address = \"",
    "exec {",
    "perms = 0600",
    "0x1F",
    "# ",
    "// ",
    "/*",
    "*/",
    "[",
    "]",
    "= true",
    "left_delimiter = \"",
    "\"\\u00e9\"",
    "\\n",
    "\\\"",
    "-template",
    "@dc1",
    "|passing",
    "~node",
    "?recurse",
    ":",
];

pub fn template_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // A first line `#delims L R` picks other delimiters, as a template block's
    // `left_delimiter`/`right_delimiter` would.
    let mut opts = Options::default();
    let mut source: &str = &text;
    if let Some(rest) = text.strip_prefix("#delims ") {
        let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let mut words = line.split(' ');
        opts.left_delimiter = words.next().map(str::to_string);
        opts.right_delimiter = words.next().map(str::to_string);
        source = body;
    }
    for (i, (name, lang)) in [("fuzz.ctmpl", Language::Go), ("fuzz.hbs", Language::Handlebars)].into_iter().enumerate()
    {
        match Compiled::new(name, source, lang, &opts) {
            Ok(_) => crate::feature(i as u64 + 10),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.is_empty());
                // The kind of complaint, without the place (`name:line:col: `).
                crate::feature(crate::error_kind(text.rsplit(": ").next().unwrap_or_default()) ^ i as u64);
            }
        }
    }
}

pub fn template_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match hcl1::parse(&text) {
        Ok(v) => {
            crate::feature(1);
            let mut config = template::config::Config::default();
            if config.apply_file("fuzz.hcl", &v).is_ok() {
                crate::feature(2);
                crate::feature(config.finish().is_ok() as u64 + 3);
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.col >= 1, "{e}");
            crate::feature(crate::error_kind(&e.message));
        }
    }
    // Each line as a value of the command line's `-template` and `-wait`, and as the argument
    // of each dependency function.
    use template::dep::Dep;
    for line in text.lines().take(16) {
        let _ = template::config::TemplateConfig::parse_spec(line);
        let _ = template::config::Wait::parse(line);
        let _ = Dep::service(line, None);
        let _ = Dep::services(line);
        let _ = Dep::nodes(line);
        let _ = Dep::key(line);
        let _ = Dep::key_prefix(line);
        let _ = Dep::node(line);
        if let Ok(d) = Dep::service(line, Some("passing,warning")) {
            let _ = d.target();
        }
    }
}
