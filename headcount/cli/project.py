"""``headcount project``: propose, approve, revoke and list safe projects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from headcount.cli.common import Group, echo_json, json_option, load_config
from headcount.cli.options import config_option


@click.group(cls=Group)
def project() -> None:
    """Five Safes, safe projects: propose, approve, revoke and list projects.

    A query must cite a project that every department in it has approved.
    """


def _show_projects(projects: Any) -> None:
    for p in projects:
        click.echo(
            f"{p.project_id:<28} {p.status:<9} expires {p.expires}  analyst {p.analyst}  "
            f"approved by {', '.join(p.approved_by) or '-'} of {', '.join(p.parties)}"
        )
        click.echo(f"  {p.title}: {p.purpose}")


@project.command("propose")
@config_option
@click.option("--analyst", required=True, help="The proposing analyst (its certificate is used).")
@click.option(
    "--id", "project_id", required=True, help="Project id, e.g. childrens-commissioner-2026."
)
@click.option("--title", required=True, help="Short title.")
@click.option("--purpose", required=True, help="The public-interest purpose (published).")
@click.option("--parties", required=True, help="Departments whose data it uses, comma-separated.")
@click.option(
    "--expires",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Expiry date, YYYY-MM-DD.",
)
def project_propose(
    config_path: Path | None,
    analyst: str,
    project_id: str,
    title: str,
    purpose: str,
    parties: str,
    expires: Any,
) -> None:
    """Propose a project; each department's steward must then approve it.

    \b
    Example:
      headcount project propose --config fed/federation.toml --analyst commissioner \\
          --id commissioner-2026 --title "Children's outcomes" \\
          --purpose "Count children across departments to plan services." \\
          --parties education,immigration --expires 2027-03-31
    """
    from headcount.client import Client

    with Client(load_config(config_path), analyst=analyst) as c:
        p = c.propose_project(
            project_id,
            title,
            purpose,
            [x.strip() for x in parties.split(",") if x.strip()],
            expires.date(),
        )
    _show_projects([p])


@project.command("approve")
@config_option
@click.option(
    "--party", required=True, help="Your department (its certificate key signs the approval)."
)
@click.argument("project_id")
def project_approve(config_path: Path | None, party: str, project_id: str) -> None:
    """As a department's data steward, sign and record approval of PROJECT_ID.

    \b
    Example:
      headcount project approve --config fed/federation.toml --party education commissioner-2026
    """
    from headcount.client import Client

    with Client(load_config(config_path), steward=party) as c:
        p = c.approve_project(project_id)
    _show_projects([p])


@project.command("revoke")
@config_option
@click.option(
    "--party", default=None, help="Revoke as this department's steward (default: the operator)."
)
@click.argument("project_id")
def project_revoke(config_path: Path | None, party: str | None, project_id: str) -> None:
    """Revoke PROJECT_ID: no further query may cite it.

    \b
    Example:
      headcount project revoke --config fed/federation.toml commissioner-2026
    """
    from headcount.client import Client

    with Client(load_config(config_path), steward=party) as c:
        p = c.revoke_project(project_id)
    _show_projects([p])


@project.command("list")
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
@json_option
def project_list(config_path: Path | None, analyst: str | None, as_json: bool) -> None:
    """List every project with its status and approvals.

    \b
    Example:
      headcount project list --config fed/federation.toml --json
    """
    from headcount.client import Client

    with Client(load_config(config_path), analyst=analyst) as c:
        projects = c.projects()
    if as_json:
        echo_json(
            [
                {
                    "project_id": p.project_id,
                    "title": p.title,
                    "purpose": p.purpose,
                    "analyst": p.analyst,
                    "parties": list(p.parties),
                    "expires": p.expires.isoformat(),
                    "approved_by": list(p.approved_by),
                    "revoked": p.revoked,
                    "status": p.status,
                }
                for p in projects
            ]
        )
        return
    _show_projects(projects)
