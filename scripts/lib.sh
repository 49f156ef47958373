# Shared helpers for scripts/up and scripts/test. Source it; do not run it.

# The Debian packages JobFarm builds and runs against.
JOBFARM_PACKAGES=(redis-server redis-tools libhiredis-dev libopenblas-dev libsqlite3-dev zlib1g-dev pkg-config tzdata)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Installs whichever of JOBFARM_PACKAGES (or of the packages given as arguments) is missing (needs root or sudo).
ensure_packages() {
    local missing=() wanted=("$@")
    [ ${#wanted[@]} -eq 0 ] && wanted=("${JOBFARM_PACKAGES[@]}")
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing missing Debian packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq || die "apt-get update failed; check the network or the apt sources"
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed; run it by hand to see why"
}

ensure_swift() {
    command -v swift >/dev/null || die "swift is not on PATH; install Swift 6 (https://www.swift.org/install/linux/) and retry"
}

# wrk (Debian package wrk), the closed-loop load of `jobfarm bench api` and of its smoke test.
ensure_wrk() {
    command -v wrk >/dev/null || ensure_packages wrk
}

# Prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "found no free port on 127.0.0.1"
}

# Waits until redis on $1 (port) answers PING with PONG: up, and done loading its data (a large AOF takes a while
# after a restart; until then Redis answers LOADING).
wait_for_redis() {
    local port=$1 reply
    for i in $(seq 1 1200); do
        reply=$(redis-cli -p "$port" ping 2>/dev/null || true)  # not up yet: redis-cli fails; set -e must not end us
        [ "$reply" = "PONG" ] && return 0
        if [ "$i" = 50 ] && [[ "$reply" == LOADING* ]]; then echo "redis-server on port $port is loading its data…" >&2; fi
        [ "$i" -gt 100 ] && [[ "$reply" != LOADING* ]] && break
        sleep 0.1
    done
    die "redis-server on port $port did not become ready (last reply: ${reply:-none}); see its log above"
}

# Makes the virtualenv $1 with Debian's python3 (installing python3-venv when it is missing); $2 says what for.
make_venv() {
    local venv=$1
    command -v python3 >/dev/null || die "python3 is needed $2; install python3 (apt-get install python3 python3-venv)"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        local saved=("${JOBFARM_PACKAGES[@]}")
        JOBFARM_PACKAGES=(python3-venv)
        ensure_packages
        JOBFARM_PACKAGES=("${saved[@]}")
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv failed; install python3-venv and retry"
    fi
}

# Installs schemathesis (PyPI) when it is missing, for the dispatcher's contract test; exports its path as
# JOBFARM_SCHEMATHESIS.
ensure_schemathesis() {
    # A schemathesis on PATH is used as it is; otherwise it goes into a virtualenv of the project's own (Debian 12's
    # python3 refuses a system-wide pip install: "externally managed").
    local venv=".build-tools/schemathesis"
    if command -v schemathesis >/dev/null; then
        JOBFARM_SCHEMATHESIS=$(command -v schemathesis)
    else
        if [ ! -x "$venv/bin/schemathesis" ]; then
            say "installing schemathesis (PyPI) into $venv for the dispatcher's contract test"
            make_venv "$venv" "to install schemathesis"
            "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4.32,<5' >/dev/null \
                || die "pip install schemathesis into $venv failed; run '$venv/bin/pip install schemathesis' to see why"
        fi
        JOBFARM_SCHEMATHESIS="$PWD/$venv/bin/schemathesis"
    fi
    export JOBFARM_SCHEMATHESIS
}

# Finds a python3 that imports module $1, installing pip requirement $2 (PyPI) into the project's own virtualenv
# .build-tools/$1 when the system's python3 lacks it; $3 says what for; exports the interpreter's path as $4.
ensure_python_module() {
    local module="$1" requirement="$2" purpose="$3" variable="$4" venv=".build-tools/$1" python
    command -v python3 >/dev/null || die "python3 is needed $purpose; install python3 (apt-get install python3 python3-venv)"
    if python3 -c "import $module" >/dev/null 2>&1; then
        python=$(command -v python3)
    else
        if ! "$venv/bin/python" -c "import $module" >/dev/null 2>&1; then
            say "installing $module (PyPI) into $venv $purpose"
            make_venv "$venv" "$purpose"
            "$venv/bin/pip" install -q --disable-pip-version-check "$requirement" >/dev/null \
                || die "pip install $module into $venv failed; run '$venv/bin/pip install $module' to see why"
        fi
        python="$PWD/$venv/bin/python"
    fi
    printf -v "$variable" '%s' "$python"
    export "${variable?}"
}

# A python3 with NumPy for the binary-tensor and number-printing tests (a client building tensors with
# `ndarray.tobytes()`): JOBFARM_TEST_PYTHON.
ensure_numpy() {
    ensure_python_module numpy 'numpy>=1.24' "for the NumPy tests" JOBFARM_TEST_PYTHON
}

# A python3 with `requests` for the Python example of the HTTP API (docs/examples/submit.py): JOBFARM_REQUESTS_PYTHON.
ensure_requests() {
    ensure_python_module requests 'requests>=2.28' "for the Python example's test" JOBFARM_REQUESTS_PYTHON
}

# Finds promtool (Debian's `prometheus` package) for the alert-rule tests, installing the package when it is missing.
# Exports its path as JOBFARM_PROMTOOL; when it cannot be installed, says so and the tests that need it skip.
ensure_promtool() {
    if ! command -v promtool >/dev/null; then
        local saved=("${JOBFARM_PACKAGES[@]}")
        JOBFARM_PACKAGES=(prometheus)
        ( ensure_packages ) || say "could not install Debian's prometheus package: the alert-rule tests skip (promtool missing)"
        JOBFARM_PACKAGES=("${saved[@]}")
    fi
    if command -v promtool >/dev/null; then
        JOBFARM_PROMTOOL=$(command -v promtool)
        export JOBFARM_PROMTOOL
    fi
}

# Installs NVIDIA's tritonclient[http] (PyPI) with NumPy into a virtualenv of the project's own, for the test that
# calls the dispatcher's Open Inference Protocol routes as a Triton user would; exports its python as
# JOBFARM_TRITON_PYTHON. Optional: when pip cannot install it, the test is skipped and says why.
ensure_tritonclient() {
    local venv=".build-tools/tritonclient"
    if ! "$venv/bin/python" -c 'import tritonclient.http, numpy' >/dev/null 2>&1; then
        say "installing tritonclient[http] and numpy (PyPI) into $venv for the Open Inference Protocol test"
        make_venv "$venv" "for the Open Inference Protocol test"
        if ! "$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http]>=2.40' 'numpy>=1.24' >/dev/null; then
            say "pip install tritonclient[http] failed; the tritonclient test is skipped (run '$venv/bin/pip install tritonclient[http]' to see why)"
            return 0
        fi
    fi
    JOBFARM_TRITON_PYTHON="$PWD/$venv/bin/python"
    export JOBFARM_TRITON_PYTHON
}
