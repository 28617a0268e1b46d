"""Writes the cases of this folder: RNN, GRU and LSTM with sequence_lens shorter than the
sequence, initial states, biases, peepholes, both layouts, reverse and bidirectional,
computed in float64 by the NumPy reference below, which follows the ONNX operator
specification (RNN-22, GRU-22, LSTM-22) with ONNX Runtime's treatment of sequence_lens: a
reversed direction starts at each sequence's last real step, Y is zero past a sequence's
length, and Y_h / Y_c hold the last real state. Run from anywhere: python3 generate.py
"""
import numpy as np, json, os, shutil
root=os.path.dirname(os.path.abspath(__file__))
for entry in os.listdir(root):
    if os.path.isdir(os.path.join(root, entry)):
        shutil.rmtree(os.path.join(root, entry))
rng=np.random.default_rng(0)
sig=lambda x:1/(1+np.exp(-x))
def cell(op,x,h,c,W,R,Wb,Rb,P,lbr):
    H=h.shape[-1]
    if op=='RNN':
        return np.tanh(x@W.T+Wb+h@R.T+Rb),None
    if op=='GRU':
        gx=x@W.T+Wb
        z=sig(gx[:,:H]+h@R[:H].T+Rb[:H]); r=sig(gx[:,H:2*H]+h@R[H:2*H].T+Rb[H:2*H])
        if lbr: n=np.tanh(gx[:,2*H:]+r*(h@R[2*H:].T+Rb[2*H:]))
        else: n=np.tanh(gx[:,2*H:]+(r*h)@R[2*H:].T+Rb[2*H:])
        return (1-z)*n+z*h,None
    g=x@W.T+Wb+h@R.T+Rb
    pi,po,pf=P[:H],P[H:2*H],P[2*H:]
    i=sig(g[:,:H]+pi*c); f=sig(g[:,2*H:3*H]+pf*c); cc=np.tanh(g[:,3*H:])
    c2=f*c+i*cc; o=sig(g[:,H:2*H]+po*c2)
    return o*np.tanh(c2),c2
def ref(op,X,W,R,B,lens,h0,c0,P,direction,lbr):
    T,Bn,_=X.shape; dirs=W.shape[0]; H=R.shape[2]; G=W.shape[1]//H
    Y=np.zeros((T,dirs,Bn,H)); Yh=np.zeros((dirs,Bn,H)); Yc=np.zeros((dirs,Bn,H))
    for d in range(dirs):
        rev = direction=='reverse' or d==1
        for b in range(Bn):
            h=h0[d,b:b+1].astype(np.float64); c=c0[d,b:b+1].astype(np.float64)
            L=lens[b]
            ts=range(L-1,-1,-1) if rev else range(L)
            for t in ts:
                h,c2=cell(op,X[t,b:b+1].astype(np.float64),h,c,W[d].astype(np.float64),R[d].astype(np.float64),B[d,:G*H],B[d,G*H:],P[d],lbr)
                if c2 is not None: c=c2
                Y[t,d,b]=h[0]
            Yh[d,b]=h[0]; Yc[d,b]=c[0]
    return Y,Yh,Yc
G={'RNN':1,'GRU':3,'LSTM':4}
n=0
for op in ['RNN','GRU','LSTM']:
  for direction, layout in [('reverse', 0), ('bidirectional', 1)]:
      for lbr in ([0,1] if op=='GRU' else [0]):
        T,Bn,In,H=4,3,3,5; dirs=2 if direction=='bidirectional' else 1
        X=rng.standard_normal((T,Bn,In)).astype(np.float32)
        W=(0.5*rng.standard_normal((dirs,G[op]*H,In))).astype(np.float32)
        R=(0.5*rng.standard_normal((dirs,G[op]*H,H))).astype(np.float32)
        B=(0.3*rng.standard_normal((dirs,2*G[op]*H))).astype(np.float32)
        lens=np.array([4,1,2],dtype=np.int32)
        h0=rng.standard_normal((dirs,Bn,H)).astype(np.float32)
        c0=rng.standard_normal((dirs,Bn,H)).astype(np.float32)
        P=(0.5*rng.standard_normal((dirs,3*H))).astype(np.float32) if op=='LSTM' else np.zeros((dirs,3*H),np.float32)
        Y,Yh,Yc=ref(op,X,W,R,B.astype(np.float64),lens,h0,c0,P,direction,lbr)
        name=f'{op.lower()}_{direction}' + ('_batchwise' if layout else '') + (f'_linear_before_reset' if lbr else '')
        dd=os.path.join(root,name); os.makedirs(dd)
        attrs={'hidden_size':H,'direction':direction,'layout':layout}
        if op=='GRU': attrs['linear_before_reset']=lbr
        if layout==1:
            X=X.transpose(1,0,2); h0=h0.transpose(1,0,2); c0=c0.transpose(1,0,2)
            Y=Y.transpose(2,0,1,3); Yh=Yh.transpose(1,0,2); Yc=Yc.transpose(1,0,2)
        ins={'X':X,'W':W,'R':R,'B':B,'sequence_lens':lens,'initial_h':h0}
        names=['X','W','R','B','sequence_lens','initial_h']
        if op=='LSTM': ins['initial_c']=c0; ins['P']=P; names+=['initial_c','P']
        for k,v in ins.items(): np.save(os.path.join(dd,k+'.npy'),v)
        outs={'Y':Y,'Y_h':Yh}
        if op=='LSTM': outs['Y_c']=Yc
        for k,v in outs.items(): np.save(os.path.join(dd,k+'.npy'),v.astype(np.float32))
        with open(os.path.join(dd,'case.json'),'w') as f:
            json.dump({'op':op,'attributes':attrs,'inputs':[k+'.npy' for k in names],'outputs':[k+'.npy' for k in outs],'opset':22,'source':'tests/data/onnx-recurrent-extra/generate.py'},f,indent=2)
            f.write('\n')
        n+=1
print(n)
