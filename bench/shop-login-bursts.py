#!/usr/bin/env python3
# Repeated login bursts against a running shop: 5 x (200 threads sending wrong-password
# logins for 6 s, then 2 s idle); prints the shop process's VmRSS/VmHWM (MiB) after each.
# Usage: python3 bench/shop-login-bursts.py PORT SHOP_PID (user "victim" must exist).
import socket, threading, time, sys
addr = ('127.0.0.1', int(sys.argv[1])); pid = sys.argv[2]
def rss():
    d = {}
    for l in open(f'/proc/{pid}/status'):
        k, v = l.split(':', 1)
        if k in ('VmRSS', 'VmHWM'): d[k] = int(v.split()[0]) // 1024
    return d
def client(i, stop, counts):
    body = ('{"username":"victim","password":"wrong-%d"}' % i).encode()
    req = b"POST /login HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    while not stop.is_set():
        try:
            s = socket.create_connection(addr, timeout=10); s.sendall(req)
            r = s.recv(64); s.close()
            code = r[9:12].decode(errors='replace'); counts[code] = counts.get(code, 0) + 1
            if code == '503': time.sleep(0.05)
        except OSError as e:
            counts['err'] = counts.get('err', 0) + 1
print('before', rss(), flush=True)
for burst in range(5):
    stop = threading.Event(); counts = {}
    ts = [threading.Thread(target=client, args=(i, stop, counts)) for i in range(200)]
    [t.start() for t in ts]; time.sleep(6); stop.set(); [t.join() for t in ts]
    time.sleep(2)
    print('burst', burst + 1, counts, 'after 2 s idle', rss(), flush=True)
