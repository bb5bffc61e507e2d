# Sourced by the device scripts: tarballs in parts a call can bring back ($OUT files over 16 MiB do not come back),
# and the carried parts back into a work folder.
pack_parts() {  # OUT NAME PATH...: PATHs (relative to the current folder) as OUT/NAME.tgz.0, .1, ... of 15 MiB
  local out=$1 name=$2; shift 2
  tar czf - "$@" | split -b 15M -d -a 1 - "$out/$name.tgz."
}
unpack_parts() {  # PARTS WORK: every NAME.tgz.N set in PARTS extracted under WORK
  local parts=$1 work=$2 name
  mkdir -p "$work"
  for name in $(ls "$parts" | sed -n 's/\.tgz\.[0-9]$//p' | sort -u); do
    cat "$parts/$name".tgz.* | tar xzf - -C "$work"
  done
}
