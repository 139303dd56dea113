#!/usr/bin/env bash
# Checks that the documentation's rule ids and links resolve:
#   * every rule id (R1, R7a, …) cited in src/, tests/, model/src/, benches/, examples/, docs/ or
#     README.md has an anchor (<a id="r7a"></a>) in docs/spec.md;
#   * every link to docs/spec.md#… and docs/lifecycle.md#… from docs/ or README.md names an
#     anchor or a heading that exists.
# Prints what it checked; exits 1 if anything does not resolve.
#
#   scripts/check-rule-ids.sh
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
anchors=$(grep -o '<a id="r[0-9]*a\?"></a>' docs/spec.md | sed 's/.*id="r\([0-9a]*\)".*/R\1/' | sort -u)
cited=$(grep -rhoE '\bR[0-9]+a?\b' --exclude=spec.md --exclude-dir=node_modules \
  src tests model/src benches examples docs README.md | sort -u)
echo "rule anchors in docs/spec.md: $(wc -l <<<"$anchors")"
echo "rule ids cited elsewhere: $(wc -l <<<"$cited") distinct ($(tr '\n' ' ' <<<"$cited"))"
missing=$(comm -23 <(echo "$cited") <(echo "$anchors"))
if [ -n "$missing" ]; then
  echo "not in docs/spec.md: $(tr '\n' ' ' <<<"$missing")"
  status=1
fi

# GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
headings() { grep '^#' "$1" | sed 's/^#* //' | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 -]//g; s/ /-/g'; }
links=0
for page in spec lifecycle; do
  while read -r link; do
    [ -n "$link" ] || continue
    links=$((links + 1))
    fragment=${link#*#}
    if ! grep -q "id=\"$fragment\"" "docs/$page.md" && ! headings "docs/$page.md" | grep -qx -- "$fragment"; then
      echo "broken link: $link"
      status=1
    fi
  done < <(grep -rhoE "$page\.md#[a-z0-9-]+" docs README.md | sort -u)
done
echo "distinct links into docs/spec.md and docs/lifecycle.md checked: $links"
[ "$status" = 0 ] && echo "all resolve"
exit "$status"
