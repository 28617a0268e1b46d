//! Losses composed of other ops (no kernel of their own, so their backward is their parts'):
//! PyTorch's `mse_loss` and `binary_cross_entropy_with_logits`, each with its `reduction`.
//! The fused softmax cross-entropy is `softmax.rs`'s.

use crate::error::Result;
use crate::kernels::softmax::LossReduction;

use super::super::{mismatch, DType, Graph, Var};

// The builders: the public `Graph` calls that add these losses.
impl Graph {
    /// PyTorch's `mse_loss`: (prediction − target)² per element, summed, averaged over
    /// every element, or kept (`LossReduction::None`, the inputs' shape). Both must have one
    /// shape (PyTorch broadcasts them, with a warning that it is probably a mistake).
    pub fn mse_loss(
        &mut self,
        prediction: Var,
        target: Var,
        reduction: LossReduction,
    ) -> Result<Var> {
        self.check_loss_operands("mse_loss", prediction, target)?;
        let difference = self.sub(prediction, target)?;
        let squares = self.mul(difference, difference)?;
        self.reduce_loss(squares, reduction)
    }

    /// PyTorch's `binary_cross_entropy_with_logits`: for logits x and targets y in [0, 1],
    /// max(x, 0) − x·y + log(1 + e^(−|x|)) per element (the form that neither overflows nor
    /// loses the small losses of confident logits), reduced as [`Graph::mse_loss`].
    pub fn binary_cross_entropy_with_logits(
        &mut self,
        logits: Var,
        target: Var,
        reduction: LossReduction,
    ) -> Result<Var> {
        self.check_loss_operands("binary_cross_entropy_with_logits", logits, target)?;
        let positive = self.relu(logits)?;
        let agreement = self.mul(logits, target)?;
        let magnitude = self.abs(logits)?;
        let negated = self.scale(magnitude, -1.0)?;
        let tail = self.map(negated, crate::kernels::elementwise::Unary::Exp)?;
        let one = self.constant(vec![1.0], &[])?;
        let tail = self.add(tail, one)?;
        let tail = self.map(tail, crate::kernels::elementwise::Unary::Log)?;
        let loss = self.sub(positive, agreement)?;
        let loss = self.add(loss, tail)?;
        self.reduce_loss(loss, reduction)
    }

    /// An error unless `a` and `b` are f32 values of this graph of one shape.
    fn check_loss_operands(&self, op: &'static str, a: Var, b: Var) -> Result<()> {
        self.check_each(op, &[a, b])?;
        if self.shape(a) != self.shape(b)
            || self.dtype(a) != DType::F32
            || self.dtype(b) != DType::F32
        {
            return Err(mismatch(
                op,
                self.shape(a),
                self.shape(b),
                "f32 values of one shape".into(),
            ));
        }
        Ok(())
    }

    /// Per-element losses summed, averaged or kept.
    fn reduce_loss(&mut self, losses: Var, reduction: LossReduction) -> Result<Var> {
        match reduction {
            LossReduction::None => Ok(losses),
            LossReduction::Sum => self.sum_all(losses),
            LossReduction::Mean => self.mean_all(losses),
        }
    }
}
