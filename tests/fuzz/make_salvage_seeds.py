#!/usr/bin/python3
# Seeds for fuzz_recording's salvage paths (tests/fuzz/seeds), made from a
# whole format-2 recording: python3 make_salvage_seeds.py seeds/rebind-v2.rec seeds
import struct, sys
T=[]
for i in range(256):
    c=i
    for _ in range(8): c=(c>>1)^(0x82f63b78 if c&1 else 0)
    T.append(c)
def crc32c(b,crc=0):
    crc^=0xffffffff
    for x in b: crc=T[(crc^x)&0xff]^(crc>>8)
    return crc^0xffffffff
src=open(sys.argv[1],'rb').read()
mb=struct.unpack_from('<I',src,16)[0]
head=bytearray(src[:24+mb])
off=24+mb; recs=[]
while off+16<=len(src):
    m,by,n,c=struct.unpack_from('<IIII',src,off); o=off+16
    while o<off+16+by:
        sz=struct.unpack_from('<H',src,o+4)[0]; recs.append(bytes(src[o:o+sz])); o+=sz
    off+=16+by
final=recs[-1]; events=recs[:-1]
def counters(received, fin):
    r=bytearray(final); r[3]= (r[3]|0x80) if fin else (r[3]&0x7f)
    struct.pack_into('<Q',r,len(r)-8,received); return bytes(r)
def block(rs, records=None, crc=None):
    body=b''.join(rs)
    h=struct.pack('<IIII',0x42534d47,len(body),len(rs) if records is None else records,0)
    c=crc32c(body,crc32c(h)) if crc is None else crc
    return struct.pack('<IIII',0x42534d47,len(body),len(rs) if records is None else records,c)+body
blocks=[]; n=0
for i in range(0,len(events),10):
    n+=len(events[i:i+10]); blocks.append(events[i:i+10]+[counters(n, False)])
blocks[-1][-1]=counters(n, True)
out=sys.argv[2]
whole=bytes(head)+b''.join(block(b) for b in blocks)
open(out+'/blocks-v2.rec','wb').write(whole)
b1=len(head)+len(block(blocks[0]))
b2=b1+len(block(blocks[1]))
open(out+'/cut-in-block.rec','wb').write(whole[:b2+100])
# fuzzing builds take a stored checksum of 0 as the only wrong one
open(out+'/bad-crc.rec','wb').write(bytes(head)+block(blocks[0])+block(blocks[1],crc=0)+b''.join(block(b) for b in blocks[2:]))
open(out+'/missing-block.rec','wb').write(bytes(head)+block(blocks[0])+b''.join(block(b) for b in blocks[2:]))
open(out+'/huge-count.rec','wb').write(bytes(head)+block(blocks[0],records=0xffffffff)+b''.join(block(b) for b in blocks[1:]))
h=bytearray(head); struct.pack_into('<I',h,20,0)
open(out+'/bad-meta-crc.rec','wb').write(bytes(h)+b''.join(block(b) for b in blocks))
