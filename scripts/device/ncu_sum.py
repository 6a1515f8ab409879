import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
for i, r in enumerate(rows):
    if 'Kernel Name' in r: hdr = i; break
h = rows[hdr]; ki = h.index('Kernel Name'); ti = h.index('gpu__time_duration.sum')
agg = collections.defaultdict(lambda: [0, 0.0])
unit = rows[hdr + 1][ti] if len(rows) > hdr + 1 else ''
tot = 0
for r in rows[hdr + 2:]:
    try: v = float(r[ti].replace(',', ''))
    except: continue
    name = r[ki][:90]
    agg[name][0] += 1; agg[name][1] += v; tot += v
print('unit', unit, 'total', tot, 'kernels', sum(a[0] for a in agg.values()))
for k, (n, v) in sorted(agg.items(), key=lambda x: -x[1][1])[:30]:
    print(f'{v:12.1f} {100*v/tot:5.1f}% {n:6d}  {k}')
