#!/bin/busybox sh
# btfgate guest init: mounts what the checks read, then runs the commands the host sends on
# the console, one per line, answering each with "@@BTFGATE-RC <status>@@".
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ulimit -l unlimited 2>/dev/null
stty -echo 2>/dev/null
echo "@@BTFGATE-READY $(uname -r)@@"
while IFS= read -r line; do
  eval "$line"
  echo "@@BTFGATE-RC $?@@"
done
reboot -f
