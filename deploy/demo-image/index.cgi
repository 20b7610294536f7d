#!/bin/sh
# The demo session's app (busybox httpd runs it for "/" and /cgi-bin/index.cgi):
# which session this is, and a counter kept in the git work tree /work/repo.
#
#   GET  /                         the page
#   GET  /?incr=1, POST /          add one to the counter, then the page
#
# The counter is written to /work/repo/counter.txt and NOT committed:
# committing and pushing is the gateway's auto-save hook's job
# (git add -A && git commit && git push in sessions.save.path) before the
# session sleeps. So whatever the page counted survives the container.
REPO=/work/repo
FILE=$REPO/counter.txt
LOCK=/tmp/counter.lock

html_escape() {
    printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

# A counter that is not a plain decimal number reads as 0.
read_counter() {
    n=$(cat "$FILE" 2>/dev/null | tr -d ' \n\r')
    case $n in
    '' | *[!0-9]*) n=0 ;;
    esac
    echo "$n"
}

incr=0
[ "$REQUEST_METHOD" = POST ] && incr=1
case "&$QUERY_STRING&" in
*'&incr=1&'*) incr=1 ;;
esac

# Read, add and write under one lock, through a temporary file and a rename,
# so concurrent requests neither lose a count nor leave half a file.
exec 9>"$LOCK"
flock 9
n=$(read_counter)
if [ "$incr" = 1 ]; then
    n=$((n + 1))
    printf '%s\n' "$n" >"$FILE.tmp" && mv "$FILE.tmp" "$FILE"
fi
flock -u 9

session=${WAKEGATE_SESSION:-$(hostname)}
dirty=clean
if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then
    dirty="not saved yet"
fi
commit=$(git -C "$REPO" log -1 --format=%h 2>/dev/null)
s=$(html_escape "$session")

printf 'Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n'
cat <<HTML
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wakegate demo: $s</title></head>
<body>
<h1>Session <code id="session">$s</code></h1>
<p>Counter: <strong id="counter">$n</strong></p>
<form method="post" action="/"><button type="submit">+1</button></form>
<p>Work tree: <span id="tree">$dirty</span>, last commit <code id="commit">${commit:-none}</code>.
The gateway's auto-save hook commits and pushes before this session sleeps.</p>
</body></html>
HTML
