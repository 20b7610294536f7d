# bash completion for wakegatectl, the operator CLI of wakegate (docs/cli.md).
#
# Install (nothing installs it for you):
#   system-wide:  cp scripts/completion/wakegatectl.bash \
#                    /usr/share/bash-completion/completions/wakegatectl
#   one user:     cp scripts/completion/wakegatectl.bash \
#                    ~/.local/share/bash-completion/completions/wakegatectl
#   this shell:   source scripts/completion/wakegatectl.bash
#
# Completes the commands, each command's options, and session ids for the
# commands that take one: the ids come from `wakegatectl ls --json`, run with
# the --admin, --token and --config given on the line so far (and the
# environment), at most 5 s; when the gateway does not answer, no id is
# offered and nothing is printed. The words after `--` (create, exec) are
# completed as file names.

_wakegatectl_ids() {
    local prog=$1
    shift
    local to=()
    command -v timeout >/dev/null 2>&1 && to=(timeout 5)
    "${to[@]}" "$prog" "$@" ls --json 2>/dev/null |
        grep -o '"id": *"[a-z0-9][a-z0-9_-]*"' | sed 's/.*"\([a-z0-9_-]*\)"$/\1/'
}

_wakegatectl() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=${COMP_WORDS[COMP_CWORD - 1]}
    local prog=${COMP_WORDS[0]}
    local commands="ls show wake sleep rm events create keepalive logs exec hosts doctor help"
    local globals="--admin --token --config --json --help --version"
    local i w cmd="" npos=0
    local pass=()

    # The command so far, its positional arguments, and the options that
    # say where the gateway is (passed on to `ls --json`).
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
        --)
            # The command to run (create, exec): file names.
            COMPREPLY=($(compgen -f -- "$cur"))
            return 0
            ;;
        --admin | --token | --config | -c)
            pass+=("$w" "${COMP_WORDS[i + 1]}")
            ((i++))
            ;;
        --admin=* | --token=* | --config=*)
            pass+=("$w")
            ;;
        --since | --tail | --template | --image | --port | --env | --label | --bind | \
            --idle-pause-after | --idle-stop-after)
            ((i++))
            ;;
        -*) ;;
        *)
            if [[ -z $cmd ]]; then
                cmd=$w
            else
                ((npos++))
            fi
            ;;
        esac
    done

    # The value of an option.
    case $prev in
    --config | -c)
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    --admin | --token | --since | --tail | --template | --image | --port | --env | --label | \
        --bind | --idle-pause-after | --idle-stop-after)
        return 0
        ;;
    esac

    local flags=""
    case $cmd in
    wake) flags="--wait" ;;
    sleep) flags="--wait --force --now" ;;
    rm) flags="--force" ;;
    events) flags="-f --since" ;;
    create) flags="--template --image --port --env --label --bind --idle-pause-after --idle-stop-after --wait --" ;;
    logs) flags="-f --tail" ;;
    exec) flags="--" ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags $globals" -- "$cur"))
        return 0
    fi
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return 0
    fi
    case $cmd in
    help)
        [[ $npos -eq 0 ]] && COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        ;;
    show | wake | sleep | rm | keepalive | logs | exec)
        if [[ $npos -eq 0 ]]; then
            COMPREPLY=($(compgen -W "$(_wakegatectl_ids "$prog" "${pass[@]}")" -- "$cur"))
        fi
        ;;
    esac
    return 0
}

complete -F _wakegatectl wakegatectl
