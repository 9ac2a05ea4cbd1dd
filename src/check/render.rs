//! The report as text for people; `--output json` serialises the same structure.

use std::fmt::Write;

use super::{ProblemReport, Report};

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

fn write_report(out: &mut String, report: &Report) -> std::fmt::Result {
    if !report.input_problems.is_empty() {
        writeln!(out, "Input problems (this report is incomplete):")?;
        for p in &report.input_problems {
            writeln!(out, "  {p}")?;
        }
        writeln!(out)?;
    }
    for ingress in &report.ingresses {
        write!(out, "Ingress {}/{}", ingress.namespace, ingress.name)?;
        if let Some(file) = &ingress.file {
            write!(out, " ({file})")?;
        }
        writeln!(out, ": {}", ingress.result)?;
        if !ingress.routes.is_empty() {
            writeln!(out, "  routes:")?;
        }
        for route in &ingress.routes {
            let kind = match route.path_type.as_str() {
                "" => String::new(),
                t => format!(" ({t})"),
            };
            let redirect = match route.redirects_to_https {
                Some(true) => ", http redirects to https",
                _ => "",
            };
            writeln!(
                out,
                "    {} {}{kind} -> {}{redirect}",
                route.host, route.path, route.backend
            )?;
            problems(out, &route.problems, "      ")?;
        }
        if !ingress.tls.is_empty() {
            writeln!(out, "  tls:")?;
        }
        for tls in &ingress.tls {
            let hosts = match tls.hosts.is_empty() {
                true => "(the certificate's names)".to_string(),
                false => tls.hosts.join(", "),
            };
            let secret = tls.secret.as_deref().unwrap_or("no secretName");
            writeln!(out, "    {hosts}: Secret {secret}")?;
            for cert in &tls.certificates {
                writeln!(
                    out,
                    "      certificate for {} valid until {}",
                    cert.host, cert.not_after
                )?;
            }
            problems(out, &tls.problems, "      ")?;
        }
        if !ingress.annotations.is_empty() {
            writeln!(out, "  annotations:")?;
        }
        for a in &ingress.annotations {
            writeln!(out, "    {:<11} {}: {:?}", a.verdict, a.key, a.value)?;
            if !a.note.is_empty() {
                writeln!(out, "                {}", a.note)?;
            }
        }
        if !ingress.problems.is_empty() {
            writeln!(out, "  problems:")?;
            problems(out, &ingress.problems, "    ")?;
        }
        writeln!(out)?;
    }
    if !report.configmap.is_empty() {
        writeln!(out, "ConfigMap:")?;
        for s in &report.configmap {
            writeln!(out, "  {:<11} {}: {:?}", s.verdict, s.key, s.value)?;
            writeln!(out, "              {}", s.note)?;
        }
        writeln!(out)?;
    }
    if !report.gateway_api.is_empty() {
        writeln!(out, "Gateway API (Portcullis's GatewayClasses):")?;
        for object in &report.gateway_api {
            let name = match object.namespace.is_empty() {
                true => object.name.clone(),
                false => format!("{}/{}", object.namespace, object.name),
            };
            let part = object
                .part
                .as_deref()
                .map_or_else(String::new, |p| format!(", {p}"));
            let wrong: Vec<String> = object
                .conditions
                .iter()
                .filter(|c| c.status == (c.type_ == "Conflicted"))
                .map(|c| format!("{}={} ({}): {}", c.type_, c.status, c.reason, c.message))
                .collect();
            match wrong.is_empty() {
                true => writeln!(out, "  {} {name}{part}: ok", object.kind)?,
                false => {
                    writeln!(out, "  {} {name}{part}:", object.kind)?;
                    for w in wrong {
                        writeln!(out, "    {w}")?;
                    }
                }
            }
        }
        writeln!(out)?;
    }
    if !report.other_problems.is_empty() {
        writeln!(out, "Other problems:")?;
        problems(out, &report.other_problems, "  ")?;
        writeln!(out)?;
    }
    let count = |result: &str| {
        report
            .ingresses
            .iter()
            .filter(|i| i.result == result)
            .count()
    };
    writeln!(
        out,
        "{} Ingress(es) of class {}: {} the same, {} differ; {} of other classes not checked. Result: {}.",
        report.ingresses.len(),
        report.ingress_class,
        count("same"),
        count("differs"),
        report.other_classes,
        report.result
    )
}

fn problems(out: &mut String, list: &[ProblemReport], indent: &str) -> std::fmt::Result {
    for p in list {
        writeln!(out, "{indent}{}: {}", p.kind, p.message)?;
    }
    Ok(())
}
