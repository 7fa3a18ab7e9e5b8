"""Post the pipeline report as one note on the merge request, or update the note an earlier push posted.

Run by .gitlab-ci.yml's `note` job: `python3 .gitlab/merge_request_note.py reports/pr/comment.md`. Reads
GitLab's CI variables (CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID, CI_PIPELINE_URL) and
PR_REPORT_TOKEN, a token with the `api` scope (CI_JOB_TOKEN cannot write notes); without it, says so and
posts nothing. A report that is not there (the rebuild failed) is a note saying so, not the last push's
report left standing. Only the standard library: the job installs nothing.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path

MARKER = "<!-- pipeline-report -->"


def api(method: str, url: str, token: str, body: dict | None = None):
    data = None if body is None else urllib.parse.urlencode(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"PRIVATE-TOKEN": token})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def main(report: str) -> int:
    env = os.environ
    if not env.get("PR_REPORT_TOKEN"):
        print("merge_request_note: PR_REPORT_TOKEN is not set: the report stays in the job's artifacts")
        return 0
    missing = [name for name in ("CI_API_V4_URL", "CI_PROJECT_ID", "CI_MERGE_REQUEST_IID") if not env.get(name)]
    if missing:
        print(f"merge_request_note: error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    notes_url = (f"{env['CI_API_V4_URL']}/projects/{env['CI_PROJECT_ID']}/merge_requests/"
                 f"{env['CI_MERGE_REQUEST_IID']}/notes")
    pipeline = env.get("CI_PIPELINE_URL", "")
    body = (f"{MARKER}\n{Path(report).read_text()}\nThe figures, base and head side by side, are in the artifacts "
            f"of [this pipeline]({pipeline})." if Path(report).is_file() else
            f"{MARKER}\nThe pipeline did not rebuild, so there is no report for this push: see "
            f"[this pipeline]({pipeline}).")
    token = env["PR_REPORT_TOKEN"]
    notes = api("GET", f"{notes_url}?per_page=100&sort=asc", token)
    mine = next((note for note in notes if MARKER in note.get("body", "")), None)
    if mine is None:
        api("POST", notes_url, token, {"body": body})
        print("merge_request_note: posted the report")
    else:
        api("PUT", f"{notes_url}/{mine['id']}", token, {"body": body})
        print(f"merge_request_note: updated note {mine['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]) if len(sys.argv) == 2 else "usage: merge_request_note.py REPORT.md")
