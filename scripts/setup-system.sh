#!/usr/bin/env bash
# Installs the Debian packages Waybill needs: a PostgreSQL server and the pg_cron
# build for that same major version. Chooses the major by what the archive can
# give with pg_cron: an installed server whose pg_cron package exists first,
# otherwise the newest major that has both. Safe to run again; does nothing when
# everything is present.
set -euo pipefail

have_cron_lib() { [ -f "/usr/lib/postgresql/$1/lib/pg_cron.so" ]; }
installed_majors() { ls /usr/lib/postgresql 2>/dev/null | sort -rn; }

python_ok() { "${PYTHON:-python3}" -c 'import ensurepip, venv' 2>/dev/null; }
server_ok() {
    for major in $(installed_majors); do
        if [ -x "/usr/lib/postgresql/$major/bin/postgres" ] && have_cron_lib "$major"; then
            return 0
        fi
    done
    return 1
}

if server_ok && python_ok; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup-system: PostgreSQL with pg_cron (or python3-venv) is missing; run this script as root to install it" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ -z "$(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    apt-get update -qq
fi

if ! python_ok; then
    apt-get install -y -qq python3-venv >/dev/null
fi
if server_ok; then
    exit 0
fi

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
available() { local c; c=$(candidate "$1"); [ -n "$c" ] && [ "$c" != "(none)" ]; }

chosen=""
for major in $(installed_majors); do
    if available "postgresql-$major-cron"; then chosen=$major; break; fi
done
if [ -z "$chosen" ]; then
    for major in $(apt-cache search --names-only '^postgresql-[0-9]+-cron$' | sed -E 's/^postgresql-([0-9]+)-cron.*/\1/' | sort -rn); do
        if available "postgresql-$major"; then chosen=$major; break; fi
    done
fi
if [ -z "$chosen" ]; then
    echo "setup-system: no PostgreSQL major in the package archive has a pg_cron package" >&2
    exit 1
fi

echo "setup-system: installing PostgreSQL $chosen with pg_cron"
apt-get install -y -qq "postgresql-$chosen" "postgresql-$chosen-cron" >/dev/null
